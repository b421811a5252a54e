"""Request metrics and the access log of every ukedge server, as one plain ASGI middleware.

Every server (hub, host agent, controller) counts the same things under its own prefix:
``<prefix>_requests_total{route,method,status}``, ``<prefix>_request_seconds{route,method}``
(time to the response's headers: a streamed log or event feed would otherwise count its whole
life as latency), ``<prefix>_received_bytes_total`` and ``<prefix>_sent_bytes_total``. Routes
are labelled by template (``/v1/instances/{key}``), never by raw path, so label cardinality stays
fixed. Each app has its own registry so that several servers live in one process (tests,
``ukedge up``).

The access log is one record per request on the server's own logger, at INFO, when the
response has ended, with its fields as ``extra`` so :mod:`ukedge.serverlog` writes them as JSON.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpMetrics", "MetricsMiddleware", "matched_route"]

# Every counter and histogram would also export a ``_created`` timestamp sample: noise on every
# scrape that no dashboard of ours reads. The switch is process-wide, so it covers the hub's and
# the agent's own metrics too (every server imports this module).
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Latency buckets from a cached answer on loopback to a blob upload's final chunk.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)


def matched_route(scope: Scope) -> str:
    """The template of the route the router matched (``/v1/instances/{key}``), else ``other``.

    Read after the app ran: Starlette's router writes the matched route into the scope.
    """
    path = getattr(scope.get("route"), "path", None)
    return str(path) if path else "other"


class HttpMetrics:
    """The request metrics of one server, named ``<prefix>_…``, in ``registry``."""

    def __init__(self, prefix: str, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            f"{prefix}_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{prefix}_request_seconds",
            "Time to the response headers, by route and method.",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.bytes_in = Counter(
            f"{prefix}_received_bytes_total", "Request body bytes.", registry=registry
        )
        self.bytes_out = Counter(
            f"{prefix}_sent_bytes_total", "Response body bytes.", registry=registry
        )


class MetricsMiddleware:
    """Counts requests, latency and bytes; writes one access-log record each to ``access_log``.

    ``route`` names the route of a finished request (``matched_route`` unless the app routes
    some paths itself, as the hub's ``/v2/`` dispatcher does).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: HttpMetrics,
        *,
        route: Callable[[Scope], str] = matched_route,
        access_log: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.route = route
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "in": 0, "out": 0, "headers": None}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
                state["headers"] = time.perf_counter() - start
            elif message["type"] == "http.response.body":
                state["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            elapsed = time.perf_counter() - start
            route = self.route(scope)
            method = scope["method"]
            m = self.metrics
            m.requests.labels(route, method, str(state["status"])).inc()
            m.latency.labels(route, method).observe(
                elapsed if state["headers"] is None else state["headers"]
            )
            m.bytes_in.inc(state["in"])
            m.bytes_out.inc(state["out"])
            if self.access_log is not None:
                self.access_log.info(
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
