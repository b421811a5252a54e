"""Prometheus metrics of the host agent.

Requests are counted and logged by :class:`ukedge.server.MetricsMiddleware` (``ukedge_agent_``
request metrics, labelled by route template). Node figures (instances by state, committed
memory, cached images) are read from the node when scraped, so they are never stale and cost
nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ukedge.host._models import InstanceState
from ukedge.server import HttpMetrics

if TYPE_CHECKING:
    from ukedge.host._node import LocalNode

__all__ = ["AgentMetrics"]


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
        self.http = HttpMetrics("ukedge_agent", self.registry)
        self.registry.register(_NodeCollector(node))
