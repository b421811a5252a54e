"""What a host agent and the controller say to each other: enrolment, heartbeat, desired state.

The agent connects out (edge nodes sit behind NAT), so the heartbeat's answer is the only way the
controller reaches a node: it carries the node's whole desired state, versioned by a
``generation`` the controller bumps whenever that node's assignment changes. The agent reports
the generation it has applied, so both sides know when a node has caught up.

These models live on the host side of the import arrows (``controller → host``): the agent must
not import the controller, and the controller builds its API from them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ukedge.host._models import HealthStatus, InstanceState, RunRequest

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
    #: The OCI platform the node runs (``linux/arm64``; its ``--platform``): what the
    #: scheduler matches against an image's platforms. Left out by older agents, whose
    #: ``architecture`` (``x86_64``) says the same.
    platform: str | None = Field(default=None, max_length=64)
    #: The accelerator of each platform the node can run (``{"linux/amd64": "kvm",
    #: "linux/arm64": "tcg"}``); left out while unknown.
    accelerators: dict[str, str] | None = None

    def wire(self) -> dict[str, object]:
        """The JSON body: fields added after the first release are left out while empty, so a
        controller that predates them still accepts the heartbeat."""
        body = self.model_dump(mode="json")
        for key in ("platform", "accelerators"):
            if not body.get(key):
                body.pop(key, None)
        return body


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
