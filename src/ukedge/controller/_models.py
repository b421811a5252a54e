"""The controller's REST models: what the CLI sends and reads, and the OpenAPI document says.

A deployment is declared, not commanded: ``POST /v1/deployments`` with a :class:`DeploymentSpec`
creates it or, when the name exists and the spec differs, makes a new revision and rolls it out.
The same spec is what ``ukedge deploy -f app.toml`` reads (its TOML has these field names).
"""

from __future__ import annotations

import enum
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ukedge.controller._platforms import require_platform
from ukedge.host import HealthStatus, InstanceState, PortMapping, RestartPolicy

__all__ = [
    "Deployment",
    "DeploymentSpec",
    "MoveRecord",
    "MoveRequest",
    "NodeRecord",
    "NodeStatus",
    "Placement",
    "PlacementSpec",
    "ReplicaRecord",
    "ResultRecordOut",
    "Revision",
    "RolloutStatus",
    "RolloutStrategy",
    "TokenCreated",
    "TokenInfo",
]

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlacementSpec(_Model):
    """Where replicas may go: nodes whose labels include ``selector``, of one of
    ``architectures`` (empty: any), spread evenly over the values of label ``spread_by``."""

    selector: dict[str, str] = Field(default_factory=dict)
    #: ``amd64`` / ``x86_64``, ``arm64`` / ``aarch64`` or an OCI platform (``linux/arm64``).
    architectures: list[str] = Field(default_factory=list)
    spread_by: str | None = None

    @field_validator("architectures")
    @classmethod
    def _architectures(cls, values: list[str]) -> list[str]:
        for value in values:
            require_platform(value, "architecture")
        return values


class RolloutStrategy(_Model):
    """Rolling update bounds, in replicas (as Kubernetes' maxSurge / maxUnavailable)."""

    max_surge: int = Field(default=1, ge=0, le=1000, strict=True)
    max_unavailable: int = Field(default=0, ge=0, le=1000, strict=True)

    @model_validator(mode="after")
    def _progress_possible(self) -> RolloutStrategy:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError(
                "max_surge and max_unavailable cannot both be 0: no rollout could move"
            )
        return self


class DeploymentSpec(_Model):
    """What to run across the fleet. ``image`` is a reference the nodes can pull (the
    controller pins it to a digest when the revision is made). Memory and vCPUs default to
    the image's config."""

    name: str
    image: str = Field(min_length=1, max_length=512)
    replicas: int = Field(default=1, ge=0, le=100_000, strict=True)
    mode: Literal["replicated", "per-node"] = "replicated"
    memory_mib: int | None = Field(default=None, ge=16, le=1 << 20, strict=True)
    vcpus: int | None = Field(default=None, ge=1, le=64, strict=True)
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[PortMapping] = Field(default_factory=list)
    restart: RestartPolicy = Field(default_factory=lambda: RestartPolicy(name="on-failure"))
    on_demand: bool = Field(default=False, strict=True)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    strategy: RolloutStrategy = Field(default_factory=RolloutStrategy)
    #: Seconds the replicas of an unreachable node are left alone before being replaced.
    autonomy_s: float = Field(default=0.0, ge=0, le=30 * 86_400)
    #: Refuse a rollout of an image without a trusted signature (issue 13).
    require_signature: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _DNS_LABEL.match(name):
            raise ValueError(
                f"invalid deployment name {name!r}: lower-case letters, digits and '-', "
                "1-40 characters, starting and ending with a letter or digit"
            )
        return name


class NodeStatus(enum.StrEnum):
    READY = "ready"
    NOT_READY = "not-ready"


class NodeRecord(_Model):
    id: str
    name: str
    status: NodeStatus
    cordoned: bool
    draining: bool
    architecture: str
    accelerator: str
    #: The accelerator of each platform the node can run (``{"linux/arm64": "tcg"}``); empty
    #: for nodes that do not report it.
    accelerators: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str]
    capacity_memory_mib: int
    capacity_vcpus: int
    allocated_memory_mib: int
    allocated_vcpus: int
    instances: int
    last_heartbeat: float | None
    enrolled_at: float
    #: Drained with ``?migrate=``: how its replicas move (None: replaced, or not draining).
    drain_migrate: Literal["snapshot", "live"] | None = None
    #: A drain's live moves switch to post-copy (``?postcopy=true``).
    drain_postcopy: bool = False
    #: Where other nodes reach its migration listener (None: it takes no part in moves).
    migration_host: str | None = None


class Revision(_Model):
    deployment: str
    revision: int
    image_digest: str  # the pinned reference, repo@sha256:...
    spec: DeploymentSpec
    created_at: float
    #: The platforms its image offers (``linux/arm64``); empty: not known (any node).
    platforms: list[str] = Field(default_factory=list)


class RolloutStatus(_Model):
    """``progressing`` while replicas of the current revision are being brought up; ``complete``
    when all of them run; ``rolled-back`` when the new revision failed its health checks and
    the previous one was restored; ``failed`` when there was nothing to return to."""

    state: Literal["progressing", "complete", "rolled-back", "failed"]
    revision: int
    desired: int
    updated: int
    ready: int
    unavailable: int
    message: str = ""


class Deployment(_Model):
    name: str
    spec: DeploymentSpec
    revision: int
    rollout: RolloutStatus
    created_at: float
    updated_at: float


class ReplicaRecord(_Model):
    """A replica and where it runs, with what its node last reported."""

    deployment: str
    replica: str
    revision: int
    node_id: str | None
    node_name: str | None
    instance: str | None
    state: str
    health: HealthStatus | None = None
    instance_state: InstanceState | None = None
    #: Its published ports on its node, as the node last reported them.
    ports: list[PortMapping] = Field(default_factory=list)


class MoveRequest(_Model):
    """Move the running replica whose instance is ``instance`` (``DEPLOYMENT-REPLICA``, as
    ``ukedge ps`` shows it on its node) to node ``to`` (name or id), with its memory."""

    instance: str = Field(min_length=1, max_length=128)
    to: str = Field(min_length=1, max_length=253)
    mode: Literal["snapshot", "live"] = "snapshot"
    #: A live move switches to post-copy after QEMU's first pass (once switched, a failure
    #: loses the replica's memory instead of leaving it running where it was).
    postcopy: bool = False

    @model_validator(mode="after")
    def _postcopy_is_live(self) -> MoveRequest:
        if self.postcopy and self.mode != "live":
            raise ValueError(f"postcopy is for live moves, not {self.mode} ones")
        return self


class MoveRecord(_Model):
    """One try at moving a replica (``ukedge migrate --to NODE``, or a drain with
    ``--migrate``): ``offer`` → ``moving`` → ``done`` | ``failed``."""

    id: str
    deployment: str
    replica: str
    instance: str
    source: str
    source_name: str | None
    target: str
    target_name: str | None
    mode: Literal["snapshot", "live"]
    #: A live move that switches to post-copy after QEMU's first pass.
    postcopy: bool = False
    state: Literal["offer", "moving", "done", "failed"]
    attempt: int
    step: str
    error: str | None
    started_at: float
    updated_at: float
    #: When the operator cancelled it (``DELETE /v1/moves/{id}``); None: not cancelled.
    cancelled_at: float | None = None


class Placement(_Model):
    deployment: str
    replica: str
    node_id: str


class TokenCreated(_Model):
    """Shown once: the controller keeps only a hash of the secret."""

    id: str
    token: str
    expires_at: float | None
    uses_left: int | None


class TokenInfo(_Model):
    id: str
    description: str
    created_at: float
    expires_at: float | None
    uses_left: int | None
    nodes_enrolled: int


class ResultRecordOut(_Model):
    """One result as the controller stores and streams it (``id`` orders them controller-wide;
    ``(node, instance, seq)`` is the idempotency key)."""

    id: int
    node_id: str
    node_name: str
    deployment: str | None
    instance: str
    seq: int
    ts: float
    received_at: float
    result: object | None = None
    error: str | None = None
    raw: str | None = None
