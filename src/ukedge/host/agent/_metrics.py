"""Prometheus metrics of the host agent.

Requests are counted and logged by :class:`ukedge.server.MetricsMiddleware` (``ukedge_agent_``
request metrics, labelled by route template). Node figures (instances by state, committed
memory, cached images, restarts and failed health probes per instance) and each result sink's
backlog in the spool, and the controller link's state when the node is enrolled, are read when
scraped, so they are never stale and cost nothing between scrapes. Sinks are labelled by URL
without its user and password.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ukedge.host._models import InstanceState
from ukedge.server import HttpMetrics

if TYPE_CHECKING:
    from ukedge.host._node import LocalNode
    from ukedge.host.link import ControllerLink
    from ukedge.host.results import ResultSpool

__all__ = ["AgentMetrics"]


class _NodeCollector(Collector):
    def __init__(self, node: LocalNode) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        info = self._node.info()
        states = GaugeMetricFamily(
            "ukedge_agent_instances", "Instances by state.", labels=["state"]
        )
        restarts = CounterMetricFamily(
            "ukedge_agent_instance_restarts",
            "Times the restart policy restarted each instance.",
            labels=["instance"],
        )
        health = CounterMetricFamily(
            "ukedge_agent_health_check_failures",
            "Failed health probes of each instance since the agent started.",
            labels=["instance"],
        )
        failures = self._node.manager.health_check_failures
        counts = dict.fromkeys(InstanceState, 0)
        for instance in self._node.list(all_instances=True):
            counts[instance.state] += 1
            restarts.add_metric([instance.name], instance.restart_count)
            health.add_metric([instance.name], failures.get(instance.id, 0))
        for state, count in counts.items():
            states.add_metric([state.value], count)
        yield states
        yield restarts
        yield health
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


def _sink_label(name: str) -> str:
    """A sink's URL without the user and password it may carry."""
    parts = urlsplit(name)
    if parts.username is None and parts.password is None:
        return name
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


class _SpoolCollector(Collector):
    """Each sink's undelivered results: a broker that is down shows as a growing backlog."""

    def __init__(self, spool: ResultSpool) -> None:
        self._spool = spool

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "ukedge_agent_results_backlog",
            "Result records the sink has not acknowledged yet.",
            labels=["sink"],
        )
        age = GaugeMetricFamily(
            "ukedge_agent_results_oldest_undelivered_seconds",
            "Age of the oldest result the sink has not acknowledged (0: none waits).",
            labels=["sink"],
        )
        now = time.time()
        for sink, waiting in sorted(self._spool.backlog().items()):
            label = _sink_label(sink)
            backlog.add_metric([label], waiting.records)
            oldest = waiting.oldest_ts
            age.add_metric([label], max(0.0, now - oldest) if oldest is not None else 0.0)
        yield backlog
        yield age


class _LinkCollector(Collector):
    """The controller link: an outage shows as connected 0 and failures growing."""

    def __init__(self, link: ControllerLink) -> None:
        self._link = link

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ukedge_agent_controller_connected",
            "1 when the last heartbeat reached the controller, else 0.",
            value=1 if self._link.connected else 0,
        )
        yield GaugeMetricFamily(
            "ukedge_agent_controller_heartbeat_failures",
            "Heartbeats in a row that did not reach the controller (0 while connected).",
            value=self._link.failures,
        )
        yield GaugeMetricFamily(
            "ukedge_agent_desired_generation",
            "Generation of the desired state the last reconcile pass applied (0: none).",
            value=self._link.applied_generation,
        )
        yield GaugeMetricFamily(
            "ukedge_agent_reconcile_errors",
            "Desired instances the last reconcile pass could not create, replace or remove.",
            value=len(self._link.errors),
        )


class AgentMetrics:
    """``spool``: the results spool whose per-sink backlog to show (the agent's); ``link``:
    the controller link, when the node is enrolled."""

    def __init__(
        self,
        node: LocalNode,
        spool: ResultSpool | None = None,
        link: ControllerLink | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpMetrics("ukedge_agent", self.registry)
        self.registry.register(_NodeCollector(node))
        if spool is not None:
            self.registry.register(_SpoolCollector(spool))
        if link is not None:
            self.registry.register(_LinkCollector(link))
