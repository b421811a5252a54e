"""The migration API's bodies: the target's offer, the source's request, a move's status."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ukedge.host._models import PortMapping
from ukedge.host.migration._protocol import Mode, Step

__all__ = ["MigrateRequest", "MigrationOffer", "MigrationStatus"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MigrationOffer(_Model):
    """What a target agent hands out (over its authenticated API) to admit one move."""

    #: The target node's name.
    node: str
    #: Where the source reaches the target's migration listener; the target fills in the port,
    #: and the host it was asked on (the client may replace it with the address it used).
    host: str
    port: int = Field(ge=1, le=65535)
    #: The listener's certificate (PEM) and its SHA-256: the source trusts exactly this one.
    cert_pem: str = Field(max_length=16384)
    fingerprint: str = Field(pattern="^[0-9a-f]{64}$")
    #: One-time secret the source proves itself with, inside TLS.
    ticket: str = Field(min_length=16, max_length=256)


class MigrateRequest(_Model):
    """Move an instance of this agent to the agent that made ``offer``."""

    offer: MigrationOffer
    mode: Mode = Mode.SNAPSHOT
    #: Host ports on the target (default: the instance's own, which must be free there).
    ports: list[PortMapping] | None = Field(default=None, max_length=64)
    #: A port the target cannot bind is published on a free one there instead of failing the
    #: move (a controller's move: the controller's view shows the new address).
    free_ports: bool = False
    #: zlib level of the state stream (0: none; 1 is fast and already shrinks RAM pages). A
    #: snapshot's chunks are compressed only while that gets them across sooner (a fast link
    #: takes them raw; see ``_pace``); a live stream's always.
    compress: int = Field(default=1, ge=0, le=9)
    #: Compress every chunk of a snapshot too (a metered link that must carry few bytes).
    compress_always: bool = False
    #: Seconds a cold move waits for the new instance to pass its health check.
    healthy_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    #: Live moves: the longest pause QEMU aims for at the switch-over; None: the source
    #: agent's setting (``migrate_downtime_limit_ms``, 300 ms unless set).
    downtime_limit_ms: int | None = Field(default=None, ge=1, le=60_000)
    #: Live moves: throttle a guest that dirties memory faster than the link carries it.
    auto_converge: bool = True
    #: Live moves: switch to post-copy after QEMU's first pass over RAM (the target asks the
    #: source for the pages its guest touches). Off by default: from the switch on, a failure
    #: loses the instance on both sides instead of leaving the source running.
    postcopy: bool = False

    @model_validator(mode="after")
    def _postcopy_is_live(self) -> MigrateRequest:
        if self.postcopy and self.mode is not Mode.LIVE:
            raise ValueError(f"postcopy is for live moves, not {self.mode.value} ones")
        return self


class MigrationStatus(_Model):
    """One move as the source agent sees it (``GET /v1/migrations/{id}``)."""

    id: str
    instance_id: str
    name: str
    mode: Mode
    target: str
    step: Step
    #: Where it failed (or was cancelled), and why; a failure after the commit only concerns
    #: the source's clean-up, and ``step`` is then ``done``.
    failed_step: Step | None = None
    error: str | None = None
    started_at: float
    finished_at: float | None = None
    #: Bytes of guest state to move (raw) and bytes sent over the channel so far.
    state_bytes: int = 0
    sent_bytes: int = 0
    #: Guest RAM the instance has.
    ram_bytes: int = 0
    #: Seconds the guest did not run: from the pause on the source to running on the target.
    paused_s: float | None = None
    #: Seconds spent in each step so far (where a move's time goes).
    steps: dict[str, float] = Field(default_factory=dict)
    #: Live moves: QEMU's own figures (RAM bytes sent, pre-copy passes, its downtime in ms).
    qemu: dict[str, int] = Field(default_factory=dict)
    #: The instance on the target once it runs there: its ports are the target's.
    target_ports: list[PortMapping] = Field(default_factory=list)
