"""Prometheus metrics of the host agent.

Request counts and latencies come from a plain ASGI middleware labelled by route template
(``/v1/instances/{key}``), never by raw path, so label cardinality stays fixed. Node figures
(instances by state, committed memory, cached images) are read from the node when scraped,
so they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ukedge.host._models import InstanceState

if TYPE_CHECKING:
    from ukedge.host._node import LocalNode

__all__ = ["AgentMetrics", "MetricsMiddleware"]


class _NodeCollector(Collector):
    def __init__(self, node: LocalNode) -> None:
        self._node = node

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = self._node.info()
        states = GaugeMetricFamily(
            "ukedge_agent_instances", "Instances by state.", labels=["state"]
        )
        counts = dict.fromkeys(InstanceState, 0)
        for instance in self._node.list(all_instances=True):
            counts[instance.state] += 1
        for state, count in counts.items():
            states.add_metric([state.value], count)
        yield states
        yield GaugeMetricFamily(
            "ukedge_agent_memory_committed_bytes",
            "Guest memory of active instances.",
            value=info.memory_committed_bytes,
        )
        yield GaugeMetricFamily(
            "ukedge_agent_memory_allocatable_bytes",
            "Guest memory instances may commit (before over-commit).",
            value=info.memory_allocatable_bytes,
        )
        yield GaugeMetricFamily(
            "ukedge_agent_vcpus_committed", "vCPUs of active instances.", value=info.vcpus_committed
        )
        yield GaugeMetricFamily("ukedge_agent_images", "Images in the cache.", value=info.images)
        yield GaugeMetricFamily(
            "ukedge_agent_image_bytes", "Bytes of the image cache.", value=info.image_bytes
        )


class AgentMetrics:
    def __init__(self, node: LocalNode) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ukedge_agent_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ukedge_agent_request_seconds",
            "Time to the response headers, by route.",
            ["route"],
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(node))


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: AgentMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.metrics.latency.labels(_route(scope)).observe(time.perf_counter() - began)
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.requests.labels(_route(scope), scope["method"], str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "other"
