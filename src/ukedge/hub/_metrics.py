"""Prometheus metrics and the access log, as one plain ASGI middleware.

Each app has its own registry so that several hubs (tests, ``ukedge up``) can live in one
process. Routes are labelled by template (``/v2/{name}/blobs/{digest}``), never by raw path, so
label cardinality stays fixed.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HubMetrics", "MetricsMiddleware", "route_template"]

access_log = logging.getLogger("ukedge.hub.access")

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
        self.requests = Counter(
            "ukedge_hub_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ukedge_hub_request_seconds",
            "Time to answer a request, by route and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "ukedge_hub_received_bytes_total", "Request body bytes.", registry=self.registry
        )
        self.bytes_out = Counter(
            "ukedge_hub_sent_bytes_total", "Response body bytes.", registry=self.registry
        )
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


class MetricsMiddleware:
    """Counts requests, latency and bytes; writes one structured access-log record each."""

    def __init__(self, app: ASGIApp, metrics: HubMetrics, access: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "in": 0, "out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope["path"])
            method = scope["method"]
            m = self.metrics
            m.requests.labels(route, method, str(state["status"])).inc()
            m.latency.labels(route, method).observe(elapsed)
            m.bytes_in.inc(state["in"])
            m.bytes_out.inc(state["out"])
            if self.access:
                access_log.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    state["status"],
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": route,
                        "status": state["status"],
                        "ms": round(elapsed * 1000, 2),
                        "bytes_in": state["in"],
                        "bytes_out": state["out"],
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )
