"""The hub's Prometheus metrics: the servers' request metrics plus uploads, storage and GC.

Requests are counted and logged by :class:`ukedge.server.MetricsMiddleware`; the ``/v2/`` API
is dispatched by the hub itself, not by the router, so its routes are named here by template
(``/v2/{name}/blobs/{digest}``), never by raw path, so label cardinality stays fixed.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ukedge.server import HttpMetrics

__all__ = ["HubMetrics", "route_template"]

_ROUTES = [
    (re.compile(r"^/v2/?$"), "/v2/"),
    (re.compile(r"^/v2/_catalog$"), "/v2/_catalog"),
    (re.compile(r"^/v2/.+/blobs/uploads/[^/]*$"), "/v2/{name}/blobs/uploads/{uuid}"),
    (re.compile(r"^/v2/.+/blobs/[^/]+$"), "/v2/{name}/blobs/{digest}"),
    (re.compile(r"^/v2/.+/manifests/[^/]+$"), "/v2/{name}/manifests/{reference}"),
    (re.compile(r"^/v2/.+/tags/list$"), "/v2/{name}/tags/list"),
    (re.compile(r"^/v2/.+/referrers/[^/]+$"), "/v2/{name}/referrers/{digest}"),
]


def route_template(path: str) -> str:
    for pattern, template in _ROUTES:
        if pattern.match(path):
            return template
    if path.startswith("/v2/"):
        return "/v2/other"
    return path if path in ("/", "/token", "/healthz", "/metrics", "/api/repositories") else "other"


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpMetrics("ukedge_hub", self.registry)
        self.uploads = Gauge(
            "ukedge_hub_uploads_in_progress",
            "Upload sessions this process holds a running hash for.",
            registry=self.registry,
        )
        self.storage_ops = Counter(
            "ukedge_hub_storage_operations_total",
            "Storage driver calls by driver, operation and outcome.",
            ["driver", "op", "outcome"],
            registry=self.registry,
        )
        self.storage_seconds = Histogram(
            "ukedge_hub_storage_seconds",
            "Storage driver call time.",
            ["driver", "op"],
            registry=self.registry,
        )
        self.gc_runs = Counter("ukedge_hub_gc_runs_total", "GC passes.", registry=self.registry)
        self.gc_swept = Counter(
            "ukedge_hub_gc_swept_blobs_total", "Blobs GC removed.", registry=self.registry
        )

    def observe_storage(self, driver: str, op: str, seconds: float, ok: bool) -> None:
        self.storage_ops.labels(driver, op, "ok" if ok else "error").inc()
        self.storage_seconds.labels(driver, op).observe(seconds)
