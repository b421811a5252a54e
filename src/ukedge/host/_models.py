"""What a caller asks of the instance manager and what it gets back.

Pydantic models, so the CLI, the host agent's REST API (which serves the same manager) and its
OpenAPI description share one definition and one set of validation messages.
"""

from __future__ import annotations

import enum
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ukedge.errors import UsageError

__all__ = ["Instance", "InstanceState", "PortMapping", "RunRequest", "parse_port_mapping"]


class InstanceState(enum.StrEnum):
    """created → starting → running → stopping → exited | failed."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (InstanceState.STARTING, InstanceState.RUNNING, InstanceState.STOPPING)


class PortMapping(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host_ip: str = "127.0.0.1"
    host_port: int = Field(ge=1, le=65535)
    guest_port: int = Field(ge=1, le=65535)
    protocol: str = Field(default="tcp", pattern="^(tcp|udp)$")

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.guest_port}/{self.protocol}"


_PUBLISH = re.compile(
    r"^(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?P<host>\d+):(?P<guest>\d+)(?:/(?P<proto>tcp|udp))?$"
)


def parse_port_mapping(text: str) -> PortMapping:
    """``[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]``, as ``docker run -p`` spells it."""
    m = _PUBLISH.match(text)
    if not m:
        raise UsageError(
            f"invalid port mapping {text!r}: expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp], "
            "e.g. 18080:8080"
        )
    host, guest = int(m["host"]), int(m["guest"])
    for label, port in (("host", host), ("guest", guest)):
        if not 1 <= port <= 65535:
            raise UsageError(
                f"invalid port mapping {text!r}: {label} port {port} is not in 1-65535"
            )
    return PortMapping(
        host_ip=(m["ip"] or "127.0.0.1").strip("[]"),
        host_port=host,
        guest_port=guest,
        protocol=m["proto"] or "tcp",
    )


class RunRequest(BaseModel):
    """An image reference plus overrides of what its config says."""

    model_config = ConfigDict(extra="forbid")

    image: str
    name: str | None = None
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[PortMapping] = Field(default_factory=list)
    memory_mib: int | None = Field(default=None, ge=16, le=1 << 20)
    vcpus: int | None = Field(default=None, ge=1, le=64)
    hostname: str | None = None

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"invalid environment variable name {key!r}")
        return env


class Instance(BaseModel):
    """One VM started from an image, as the manager tracks it."""

    id: str
    name: str
    image: str
    image_digest: str
    state: InstanceState
    exit_code: int | None = None
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    memory_mib: int
    vcpus: int
    ports: list[PortMapping] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    args: list[str] | None = None
    workdir: str
    backend: str = "qemu"
    #: Resumed from a snapshot of a ready guest (``ukedge image prewarm``) instead of booted.
    restored: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:12]
