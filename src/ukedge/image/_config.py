"""The image config blob (``application/vnd.ukedge.config.v1+json``).

It carries everything a host needs to boot the image without reading the Ukfile: architecture,
boot protocol and kernel command line, what to run, its environment and resources, published
ports, the health check and labels. The JSON form is canonical (sorted keys, no spaces) so the
same build gives the same digest.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ukedge.image._platform import Architecture, Platform

__all__ = [
    "BootConfig",
    "HealthCheck",
    "ImageConfig",
    "KernelInfo",
    "PortSpec",
    "canonical_json",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class PortSpec(_Model):
    """A port the application listens on inside the guest."""

    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class HealthCheck(_Model):
    """How a host tells that the application is ready: a TCP connect or an HTTP GET < 400."""

    type: Literal["tcp", "http"]
    port: int = Field(ge=1, le=65535)
    path: str = "/"
    interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=3, ge=1)
    start_period_s: float = Field(default=0.0, ge=0)

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{v!r} must start with '/'")
        return v


class KernelInfo(_Model):
    """Which kernel build the image carries, so a host can tell two images share one."""

    profile: str
    version: str


class BootConfig(_Model):
    """How the host starts the kernel layer."""

    #: ``linux-pvh``: QEMU ``-kernel`` boots the kernel layer's x86_64 ELF through its PVH
    #: note; ``linux-bzimage``: an x86 bzImage; ``linux-arm64-image``: the arm64 ``Image``
    #: (Documentation/arm64/booting.rst) on QEMU's ``virt`` machine.
    protocol: Literal["linux-pvh", "linux-bzimage", "linux-arm64-image"] = "linux-pvh"
    cmdline: str = ""


class ImageConfig(_Model):
    architecture: Architecture = "amd64"
    os: Literal["linux"] = "linux"
    #: OCI's CPU variant (``v8`` for arm64); None: the architecture's default.
    variant: str | None = None
    created: str | None = None
    name: str
    runtime: str
    entrypoint: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str = "/"
    memory_mib: int = Field(default=64, ge=16, le=1 << 20)
    #: The least memory this image boots with (its unpacked layers must fit in the guest's
    #: tmpfs root); None in images built before it was recorded.
    min_memory_mib: int | None = Field(default=None, ge=1, le=1 << 20)
    vcpus: int = Field(default=1, ge=1, le=64)
    ports: list[PortSpec] = Field(default_factory=list)
    healthcheck: HealthCheck | None = None
    kernel: KernelInfo
    boot: BootConfig = Field(default_factory=BootConfig)
    labels: dict[str, str] = Field(default_factory=dict)
    #: When a prewarm snapshot of this image is taken: None ("ready") once its health check
    #: passes; "pre-app" after the kernel, init and runtime start, before the app does (for apps
    #: that cannot reseed what they seed at start); "off": never (every run boots).
    snapshot: Literal["pre-app", "off"] | None = None
    #: The guest hostname of every instance; None: each instance's own name.
    hostname: str | None = Field(
        default=None, pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
    )

    @property
    def platform(self) -> Platform:
        return Platform(os=self.os, architecture=self.architecture, variant=self.variant)

    def to_json(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_json(cls, data: bytes) -> ImageConfig:
        return cls.model_validate_json(data)


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no insignificant whitespace: equal documents get equal digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
