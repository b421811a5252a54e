"""What a host agent and the controller say to each other: enrolment, heartbeat, desired state.

The agent connects out (edge nodes sit behind NAT), so the heartbeat's answer is the only way the
controller reaches a node: it carries the node's whole desired state, versioned by a
``generation`` the controller bumps whenever that node's assignment changes. The agent reports
the generation it has applied, so both sides know when a node has caught up.

Moves a controller drives (``ukedge node drain --migrate``) travel the same way, because the
controller has no address of its nodes: its reply asks the target node for a migration offer
(``offer_requests``), the target reports the offer in its next heartbeat (``offers``; the ticket
in it is a secret, carried only over the pinned TLS link), the reply to the source orders the
move with that offer (``moves``) and the source reports how it went (``move_reports``).

Compatibility: fields added after the first release are left out of a message while empty
(``exclude_if``), and a peer of that release, which refuses unknown fields, reads what a newer
one sends as long as no move is under way; the controller orders moves only from and to nodes
that report a ``migration_host`` (and so understand them).

These models live on the host side of the import arrows (``controller → host``): the agent must
not import the controller, and the controller builds its API from them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ukedge.host._models import HealthStatus, InstanceState, PortMapping, RunRequest

__all__ = [
    "ENROL_PATH",
    "HEARTBEAT_PATH",
    "RESULTS_PATH",
    "DesiredInstance",
    "DesiredState",
    "EnrolReply",
    "EnrolRequest",
    "Heartbeat",
    "HeartbeatReply",
    "InstanceReport",
    "MoveMode",
    "MoveOffer",
    "MoveOrder",
    "MoveReport",
    "NodeResources",
    "ResultBatch",
    "ResultEntry",
]

#: The controller's routes the agent calls (the node's credential as bearer token, except enrol).
ENROL_PATH = "/v1/nodes/enrol"
HEARTBEAT_PATH = "/v1/nodes/{node_id}/heartbeat"
RESULTS_PATH = "/v1/nodes/{node_id}/results"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _empty(value: object) -> bool:
    return not value


#: How a controller-driven move carries the app's memory (``cold`` is the controller's own
#: make-before-break replacement, no move).
MoveMode = Literal["snapshot", "live"]


class MoveOffer(_Wire):
    """The offer a target node made for the controller's move ``move``, or why it could not.

    ``offer`` is a :class:`ukedge.host.migration.MigrationOffer` as JSON: the link sits below the
    migration room and carries it unread, so the offer keeps one definition."""

    move: str = Field(min_length=1, max_length=64)
    offer: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=4096)


class MoveOrder(_Wire):
    """Move the controller's instance ``instance`` to the node that made ``offer``."""

    move: str = Field(min_length=1, max_length=64)
    instance: str = Field(min_length=1, max_length=128)
    mode: MoveMode = "snapshot"
    offer: dict[str, Any]
    #: A live move switches to post-copy after QEMU's first pass (``ukedge migrate --postcopy``).
    #: Left out while false, so a peer of a release without it reads every other order.
    postcopy: bool = Field(default=False, exclude_if=_empty)


class MoveReport(_Wire):
    """How the source node's move ``move`` stands: ``done`` once the target has committed (the
    instance runs there), ``failed`` when it ended with the instance still on the source."""

    move: str = Field(min_length=1, max_length=64)
    state: Literal["running", "done", "failed"]
    step: str = ""
    error: str | None = Field(default=None, max_length=4096)


class NodeResources(_Wire):
    """Guest memory and vCPUs: what a node may commit (after its overcommit ratio) or has."""

    memory_mib: int = Field(ge=0)
    vcpus: int = Field(ge=0)


class EnrolRequest(_Wire):
    """A node's first call: the join token's id and secret (never its pin), and who it is."""

    token: str = Field(min_length=1, max_length=512)
    name: str = Field(min_length=1, max_length=253)
    architecture: str = Field(min_length=1, max_length=32)
    labels: dict[str, str] = Field(default_factory=dict)


class EnrolReply(_Wire):
    """The node's own id and credential (a bearer token only this node holds)."""

    node_id: str
    credential: str
    heartbeat_interval_s: float


class InstanceReport(_Wire):
    """One instance as the agent sees it. ``deployment`` is None for instances the controller
    did not ask for (started by hand); the controller shows them but never touches them."""

    name: str
    deployment: str | None = None
    replica: str | None = None
    revision: int | None = None
    image: str
    state: InstanceState
    health: HealthStatus
    restart_count: int = 0
    exit_code: int | None = None
    error: str | None = None
    #: Its published ports on the node, reported by nodes that take part in moves (a move may
    #: change them: the controller shows these).
    ports: list[PortMapping] = Field(default_factory=list, max_length=64, exclude_if=_empty)

    @classmethod
    def of_desired(
        cls,
        item: DesiredInstance,
        state: InstanceState,
        health: HealthStatus,
        *,
        error: str | None = None,
    ) -> InstanceReport:
        """A report on ``item`` with no instance record behind it (the agent could not make
        it; a hollow node pretends it runs): named by what the controller asked for."""
        return cls(
            name=item.name,
            deployment=item.deployment,
            replica=item.replica,
            revision=item.revision,
            image=item.request.image,
            state=state,
            health=health,
            error=error,
        )


class Heartbeat(_Wire):
    """Sent every few seconds; also the node's full report (no separate status call)."""

    name: str
    architecture: str
    accelerator: str
    labels: dict[str, str] = Field(default_factory=dict)
    capacity: NodeResources
    allocated: NodeResources
    #: Digests of the layer blobs the node has cached (the scheduler prefers such nodes).
    cached_layers: list[str] = Field(default_factory=list)
    instances: list[InstanceReport] = Field(default_factory=list)
    #: The generation of desired state the agent last applied (0: none yet).
    applied_generation: int = Field(default=0, ge=0)
    #: The host other nodes reach this node's migration listener at; None: the agent takes no
    #: part in controller-driven moves (an older agent, or one not set up for them).
    migration_host: str | None = Field(default=None, max_length=253, exclude_if=_empty)
    #: Offers made for the moves the controller asked about, and the moves this node drives.
    offers: list[MoveOffer] = Field(default_factory=list, max_length=64, exclude_if=_empty)
    move_reports: list[MoveReport] = Field(default_factory=list, max_length=64, exclude_if=_empty)
    #: The OCI platform the node runs (``linux/arm64``; its ``--platform``): what the
    #: scheduler matches against an image's platforms. Left out by older agents, whose
    #: ``architecture`` (``x86_64``) says the same.
    platform: str | None = Field(default=None, max_length=64, exclude_if=_empty)
    #: The accelerator of each platform the node can run (``{"linux/amd64": "kvm",
    #: "linux/arm64": "tcg"}``); left out while unknown.
    accelerators: dict[str, str] | None = Field(default=None, exclude_if=_empty)


class DesiredInstance(_Wire):
    """One replica the node should run. ``name`` is the instance name on the node (unique per
    node, stable across revisions of one replica so a restart is recognised as the same one);
    ``request.image`` is a pullable reference pinned by digest."""

    name: str
    deployment: str
    replica: str
    revision: int = Field(ge=1)
    request: RunRequest


class DesiredState(_Wire):
    """Everything the node should run for the controller; anything else the controller started
    there is removed. ``prepull`` names images to fetch before a rollout switches to them."""

    generation: int = Field(ge=0)
    instances: list[DesiredInstance] = Field(default_factory=list)
    prepull: list[str] = Field(default_factory=list)


class HeartbeatReply(_Wire):
    """The answer to a heartbeat: the desired state (None when the node has already applied the
    current generation, so steady-state heartbeats stay small) and when to call again."""

    desired: DesiredState | None = None
    heartbeat_interval_s: float
    #: Moves this node is the target of and should make an offer for (their ids).
    offer_requests: list[str] = Field(default_factory=list, max_length=64, exclude_if=_empty)
    #: Moves this node should drive, as the source.
    moves: list[MoveOrder] = Field(default_factory=list, max_length=64, exclude_if=_empty)
    #: Moves this node drives that the operator cancelled (their ids): cancel them as
    #: ``DELETE /v1/migrations/{id}`` does, and report how they ended.
    cancels: list[str] = Field(default_factory=list, max_length=64, exclude_if=_empty)


class ResultEntry(_Wire):
    """One record of an instance's results, numbered by the node's spool (idempotent key:
    node, instance, seq)."""

    seq: int = Field(ge=1)
    ts: float
    line: str
    error: str | None = None


class ResultBatch(_Wire):
    """Consecutive records of one instance; the reply says up to which seq they are stored."""

    instance: str
    deployment: str | None = None
    records: list[ResultEntry] = Field(min_length=1, max_length=10_000)
