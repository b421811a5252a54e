"""The fleet as the controller's pure logic sees it: plain, frozen values, no database, no I/O.

The scheduler (:mod:`ukedge.controller._scheduler`) and the reconciler's planner
(:mod:`ukedge.controller._planner`) are functions of these; the store reads them from the
database and applies what the functions decide in one transaction. Keeping the decisions pure
makes them testable by property (never over-commit, always honour selectors, same input same
output) and lets a standby controller replay them exactly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DeploymentView",
    "NodeView",
    "ReplicaState",
    "ReplicaView",
    "Resources",
    "ScoringStrategy",
]

#: How the scheduler scores nodes that fit: spread load (least-allocated) or fill nodes first.
ScoringStrategy = Literal["least-allocated", "bin-pack"]


@dataclass(frozen=True, order=True)
class Resources:
    memory_mib: int = 0
    vcpus: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.memory_mib + other.memory_mib, self.vcpus + other.vcpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.memory_mib - other.memory_mib, self.vcpus - other.vcpus)

    def fits_in(self, other: Resources) -> bool:
        return self.memory_mib <= other.memory_mib and self.vcpus <= other.vcpus


@dataclass(frozen=True)
class NodeView:
    """A node as its last heartbeat and the operator left it.

    ``capacity`` is what instances may commit there (after the node's own overcommit ratio);
    ``reserved`` is what instances the controller does not own hold (started by hand), which
    placement must leave alone. ``ready`` is False once no heartbeat came for the NotReady
    timeout; ``last_seen`` is the controller's clock at the last heartbeat (None: never).
    """

    id: str
    name: str
    ready: bool
    architecture: str
    capacity: Resources
    reserved: Resources = Resources()
    labels: Mapping[str, str] = field(default_factory=dict)
    cordoned: bool = False
    draining: bool = False
    cached_layers: frozenset[str] = frozenset()
    last_seen: float | None = None

    @property
    def schedulable(self) -> bool:
        return self.ready and not self.cordoned and not self.draining


@dataclass(frozen=True)
class DeploymentView:
    """A deployment's current revision, as the scheduler and planner need it.

    ``replicas`` is ignored in ``per-node`` mode (one replica on every node that matches).
    ``layers`` maps the image's layer digests to their sizes (cached bytes score a node).
    ``previous_revision`` is the revision a failed rollout returns to (None: first revision).
    ``autonomy_s``: for that long after a node stops answering, its replicas are not replaced.
    """

    name: str
    revision: int
    memory_mib: int
    vcpus: int
    replicas: int = 1
    mode: Literal["replicated", "per-node"] = "replicated"
    architectures: frozenset[str] = frozenset()  # empty: any
    #: The image's platforms (``linux/arm64``), from the pin; empty: not known (any node).
    platforms: frozenset[str] = frozenset()
    selector: Mapping[str, str] = field(default_factory=dict)
    spread_by: str | None = None
    layers: Mapping[str, int] = field(default_factory=dict)
    max_surge: int = 1
    max_unavailable: int = 0
    autonomy_s: float = 0.0
    previous_revision: int | None = None
    #: Host ports its replicas publish (``tcp/8080``): one replica a node, and none where
    #: another replica holds one of them.
    host_ports: frozenset[str] = frozenset()

    @property
    def resources(self) -> Resources:
        return Resources(self.memory_mib, self.vcpus)


class ReplicaState(enum.StrEnum):
    """A replica as its node last reported it (``pending``: assigned, not yet reported)."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"  # running, and healthy (or the image has no health check)
    UNHEALTHY = "unhealthy"
    FAILED = "failed"  # ended and not being restarted by the node
    #: Ended with status 0 and its restart policy does not start it again (``no``,
    #: ``on-failure``): its work is done, so it is kept as it is, neither failed nor replaced.
    COMPLETED = "completed"
    LOST = "lost"  # its node is NotReady

    @property
    def ended(self) -> bool:
        """Ended for good (failed or completed): its machine is gone and holds nothing."""
        return self in (ReplicaState.FAILED, ReplicaState.COMPLETED)

    @property
    def available(self) -> bool:
        """Serving what its deployment asks of it: running, or completed (a job that finished
        needs nothing more). Rollouts and their status count these, not only running ones."""
        return self in (ReplicaState.RUNNING, ReplicaState.COMPLETED)


@dataclass(frozen=True)
class ReplicaView:
    """One replica: a stable id within its deployment, the revision it runs, where it is."""

    deployment: str
    replica: str
    revision: int
    node_id: str | None
    state: ReplicaState = ReplicaState.PENDING
    resources: Resources = Resources()
    #: When the replica was assigned to its node (controller clock), for start-up grace.
    assigned_at: float = 0.0
    #: Host ports it publishes on its node (``tcp/8080``), as its revision says.
    host_ports: frozenset[str] = frozenset()
