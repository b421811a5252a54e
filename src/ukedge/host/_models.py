"""What a caller asks of the instance manager and what it gets back.

Pydantic models, so the CLI, the host agent's REST API (which serves the same manager) and its
OpenAPI description share one definition and one set of validation messages.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ukedge.errors import ImageError, UsageError
from ukedge.host._names import NAME_PATTERN
from ukedge.host._states import HealthStatus, InstanceState
from ukedge.image import Platform, parse_platform
from ukedge.ports import PortMapping, parse_port_mapping
from ukedge.validation import validation_message

__all__ = [
    "MAX_LABELS",
    "MAX_LAUNCH_BYTES",
    "ApiError",
    "ErrorResponse",
    "HealthStatus",
    "ImageSummary",
    "Instance",
    "InstanceEvent",
    "InstanceState",
    "InstanceStats",
    "NodeInfo",
    "PortMapping",
    "PruneReport",
    "PullRequest",
    "RestartPolicy",
    "RunRequest",
    "check_labels",
    "parse_port_mapping",
    "parse_restart_policy",
    "run_request",
]

#: The most bytes of arguments plus environment one instance takes.
MAX_LAUNCH_BYTES = 64 * 1024

#: The most labels one instance carries, and the longest key and value.
MAX_LABELS = 64
_MAX_LABEL_KEY = 128
_MAX_LABEL_VALUE = 1024
#: Docker's label keys: lower-case letters and digits, single '.' or '-' between them
#: (``com.example.tier``, ``ukedge.deployment``).
_LABEL_KEY = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*\Z")

_HOSTNAME = re.compile(r"^(?=.{1,63}\Z)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\Z")


class _Model(BaseModel):
    """Each model builds its validator on first use: ``ukedge ps`` needs :class:`Instance`
    only, and building every model of the node's API at import costs it tens of ms."""

    model_config = ConfigDict(defer_build=True)


class RestartPolicy(_Model):
    """When the manager starts an ended instance again: ``no``, ``on-failure[:N]``, ``always``.

    ``on-failure`` means a non-zero exit status, a failed machine or an unhealthy app; ``N``
    caps the restarts. A stop asked by the user never triggers a restart.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["no", "on-failure", "always"] = "no"
    max_retries: int | None = Field(default=None, ge=1, le=10_000, strict=True)

    @model_validator(mode="after")
    def _retries_only_on_failure(self) -> RestartPolicy:
        if self.max_retries is not None and self.name != "on-failure":
            raise ValueError("max_retries applies only to the on-failure policy")
        return self

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries else self.name


def parse_restart_policy(text: str) -> RestartPolicy:
    """``no``, ``always``, ``on-failure`` or ``on-failure:N``, as ``docker run --restart``."""
    name, sep, count = text.partition(":")
    if name not in ("no", "on-failure", "always") or (sep and name != "on-failure"):
        raise UsageError(
            f"invalid restart policy {text!r}: expected no, always, on-failure or on-failure:N"
        )
    if not sep:
        return RestartPolicy(name=name)  # type: ignore[arg-type]
    if not count.isdigit() or int(count) < 1:
        raise UsageError(f"invalid restart policy {text!r}: N must be a positive integer")
    return RestartPolicy(name="on-failure", max_retries=int(count))


class RunRequest(_Model):
    """An image reference plus overrides of what its config says.

    Validated here rather than in each caller, so ``ukedge run`` and the agent's REST API
    refuse the same input with the same message. Numbers and flags are strict: ``true`` is no
    vCPU count and ``"yes"`` no flag, whatever a lenient parser would make of them.
    """

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=512)
    name: str | None = None
    args: list[str] | None = Field(default=None, max_length=256)
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[PortMapping] = Field(default_factory=list, max_length=64)
    memory_mib: int | None = Field(default=None, ge=16, le=1 << 20, strict=True)
    vcpus: int | None = Field(default=None, ge=1, le=64, strict=True)
    hostname: str | None = None
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    #: Boot from scratch even when a prewarmed snapshot of this image exists.
    cold: bool = Field(default=False, strict=True)
    #: Scale to zero: the agent listens on the published ports itself, boots the VM on the first
    #: connection and stops it after ``idle_timeout_s`` without connections.
    on_demand: bool = Field(default=False, strict=True)
    idle_timeout_s: float = Field(default=30.0, gt=0, le=86_400, strict=True)
    #: Remove the instance once it has ended (``run --rm -d`` through an agent): the node does
    #: it, as docker's daemon does, since no client is left to.
    auto_remove: bool = Field(default=False, strict=True)
    #: Marks for whoever manages the instance (``ukedge.deployment`` for the controller link).
    labels: dict[str, str] = Field(default_factory=dict)
    #: Which platform of a multi-platform image to run (``linux/arm64``); None: the node's.
    #: One that is not the host's runs under emulation (TCG).
    platform: Platform | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_labels(labels)

    @field_validator("platform", mode="before")
    @classmethod
    def _platform(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return parse_platform(value)
            except ImageError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not NAME_PATTERN.match(name):
            raise ValueError(
                f"invalid instance name {name!r}: use letters, digits, '_', '.', '-' "
                "(at most 63 characters, starting with a letter or digit)"
            )
        return name

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        if not image.isprintable():
            raise ValueError(f"invalid image reference {image!r}: it has control characters")
        return image

    @field_validator("args")
    @classmethod
    def _args(cls, args: list[str] | None) -> list[str] | None:
        # The guest receives them as C strings: a NUL would cut one short.
        for i, arg in enumerate(args or []):
            if "\0" in arg:
                raise ValueError(f"argument {i} contains a NUL byte")
        return args

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, hostname: str | None) -> str | None:
        if hostname is not None and not _HOSTNAME.match(hostname):
            raise ValueError(f"invalid hostname {hostname!r}: letters, digits and '-', 1-63")
        return hostname

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        if len(env) > 256:
            raise ValueError("at most 256 environment variables")
        for key, value in env.items():
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"invalid environment variable name {key!r}")
            if "\0" in value:
                raise ValueError(f"environment variable {key} contains a NUL byte")
        return env

    @model_validator(mode="after")
    def _launch_size(self) -> RunRequest:
        # Arguments and environment travel to the guest in its launch archive and are kept
        # in the instance record: cap them where every caller's input passes.
        size = sum(len(a.encode()) for a in self.args or []) + sum(
            len(k.encode()) + len(v.encode()) for k, v in self.env.items()
        )
        if size > MAX_LAUNCH_BYTES:
            raise ValueError(
                f"arguments and environment take {size} bytes; at most {MAX_LAUNCH_BYTES} "
                "(put bulk data in the image or fetch it from the app)"
            )
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> RunRequest:
        for i, mapping in enumerate(self.ports):
            for other in self.ports[:i]:
                if mapping.overlaps(other):
                    raise ValueError(f"host port of {mapping} is published twice ({other})")
        return self

    @model_validator(mode="after")
    def _removal_or_another_run(self) -> RunRequest:
        # Removing an ended instance and starting it again (a restart policy, the next
        # connection of an on-demand one) cannot both be what happens after it ends.
        if self.auto_remove and self.restart.name != "no":
            raise ValueError("auto_remove (--rm) cannot be combined with a restart policy")
        if self.auto_remove and self.on_demand:
            raise ValueError("auto_remove (--rm) cannot be combined with on_demand")
        return self

    @model_validator(mode="after")
    def _on_demand_needs_a_port(self) -> RunRequest:
        if self.on_demand and not any(p.protocol == "tcp" for p in self.ports):
            raise ValueError("an on-demand instance needs a published TCP port (-p) to listen on")
        return self


class PullRequest(_Model):
    """What ``POST /v1/images/pull`` takes."""

    model_config = ConfigDict(extra="forbid")

    ref: str = Field(min_length=1, max_length=512)


class ApiError(_Model):
    #: The ukedge error class (``NoSuchInstanceError``), so a client raises the same one.
    kind: str
    message: str


class ErrorResponse(_Model):
    """Every error answer of the agent's API (``{"error": {"kind", "message"}}``)."""

    error: ApiError


class Instance(_Model):
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
    #: Resumed from a snapshot of a ready guest (``ukedge image prewarm``) instead of booted.
    restored: bool = False
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    #: Restarts made by the restart policy since the instance was created (``on-failure:N``
    #: gives up once it reaches N).
    restart_count: int = 0
    health: HealthStatus = HealthStatus.NONE
    on_demand: bool = False
    idle_timeout_s: float | None = None
    hostname: str | None = None
    #: Always boot from scratch, never from a prewarmed snapshot.
    cold: bool = False
    #: Removed by the node's supervisor once it has ended (``run --rm -d`` through an agent).
    auto_remove: bool = False
    #: The last stop or kill was asked for (user, proxy), so the restart policy does not apply;
    #: cleared by the next start.
    stopped_by_user: bool = False
    #: Host-side forwards the manager added for itself at the last start (loopback, ephemeral
    #: ports): the health check's guest port when it is not published, and, for an on-demand
    #: instance, every published TCP port (the agent's proxy owns the published host port).
    upstream_ports: list[PortMapping] = Field(default_factory=list)
    #: Failed health probes in a row.
    health_failures: int = 0
    #: When the current run first passed its health check (None: not yet).
    healthy_at: float | None = None
    #: When the restart policy starts this ended instance again (epoch seconds); None: never.
    restart_at: float | None = None
    #: The back-off before the last policy restart (doubles per restart, see ``_restart``).
    restart_delay_s: float | None = None
    #: Machines started so far; the console of each earlier run is kept beside the current one.
    runs: int = 0
    #: What the run request marked it with (records written before labels existed have none).
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]


class InstanceStats(_Model):
    """What the host pays for one running instance."""

    id: str
    name: str
    rss_bytes: int
    #: Proportional set size: shared pages (the mapped kernel) divided among their users.
    pss_bytes: int | None = None
    cpu_seconds: float


class InstanceEvent(_Model):
    """One state change of one instance, as the agent's event stream reports it."""

    time: float
    id: str
    name: str
    state: InstanceState
    previous: InstanceState | None = None
    health: HealthStatus = HealthStatus.NONE
    exit_code: int | None = None
    #: What happened, docker's names: ``create`` (→ created), ``starting`` (→ starting),
    #: ``start`` or ``restart`` (→ running; ``restart`` when the restart policy started it),
    #: ``stop`` (→ stopping, or a pending restart cancelled), ``kill`` (asked; ``die``
    #: follows), ``die`` (→ exited or failed), ``health_status`` (health changed while the
    #: state did not), ``remove`` (the record is gone), ``refused`` (the node's signature
    #: policy refused the image; nothing started; ``id`` is empty for a refused pull);
    #: ``migrate-out``, ``migrate-in`` and ``migrate-failed`` when it moves between nodes, and
    #: ``migrate-postcopy`` when a post-copy move switched (a failure then loses it).
    action: str
    #: What the action says beyond the state: why an image was refused, why an instance
    #: died (its ``error``), where a move went, or what failed in it.
    detail: str | None = None
    #: For ``refused``: the image and its manifest digest.
    image: str | None = None
    image_digest: str | None = None


class ImageSummary(_Model):
    """One image of a node's store, as ``ukedge images`` lists it."""

    ref: str
    repository: str
    tag: str | None
    id: str
    digest: str
    created: str
    #: Compressed bytes, as pushed (layers + config).
    size: int
    runtime: str
    layers: list[int]
    #: When an instance last started from it (the LRU order of cache eviction); None: never.
    last_used: float | None = None
    #: Some instance (of any state) refers to it, so eviction and prune keep it.
    in_use: bool = False
    #: The platforms (``linux/arm64``) it holds: one, or those of an index that are here.
    platforms: list[str] = Field(default_factory=list)


class PruneReport(_Model):
    removed: list[str] = Field(default_factory=list)
    reclaimed_bytes: int = 0


class NodeInfo(_Model):
    """What a node offers, as the agent reports it (and, later, the controller schedules on)."""

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    version: str
    architecture: str
    cpus: int
    memory_total_bytes: int
    #: What instances may use: total less the reserve kept for the host itself.
    memory_allocatable_bytes: int
    #: Guest memory and vCPUs of the active instances (what admission counts).
    memory_committed_bytes: int
    vcpus_committed: int
    overcommit_ratio: float
    accelerator: str
    accelerator_detail: str = ""
    qemu_version: str
    images: int
    image_bytes: int
    image_budget_bytes: int | None = None
    instances: int
    instances_running: int


def run_request(**fields: object) -> RunRequest:
    """A :class:`RunRequest`, or a :class:`UsageError` naming each bad field."""
    try:
        return RunRequest.model_validate(fields)
    except ValidationError as exc:
        raise UsageError(f"invalid run request: {validation_message(exc)}") from None


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Raise :class:`ValueError` naming the first bad label; returns ``labels``.

    Labels mark instances for whoever manages them (the controller link only ever touches
    instances carrying ``ukedge.deployment``); they never reach the guest.
    """
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if len(key) > _MAX_LABEL_KEY or not _LABEL_KEY.match(key):
            raise ValueError(
                f"invalid label key {key!r}: lower-case letters and digits, single '.' or '-' "
                f"between them (e.g. com.example.tier), at most {_MAX_LABEL_KEY} characters"
            )
        if len(value) > _MAX_LABEL_VALUE or not value.isprintable():
            raise ValueError(
                f"invalid value of label {key}: printable characters only, at most "
                f"{_MAX_LABEL_VALUE}"
            )
    return labels
