"""The Ukfile: what an application directory says about the image it becomes.

A Ukfile is TOML (``DIR/Ukfile``)::

    [app]
    name = "sensor-agg"
    runtime = "python"                 # "static" | "python"
    entrypoint = ["python3", "-u", "/app/main.py"]   # default depends on the runtime
    args = []
    workdir = "/app"

    [python]                           # only with runtime = "python"
    requirements = ["idna==3.7"]       # or a requirements.txt next to the Ukfile

    [static]                           # only with runtime = "static"
    sources = ["hello.c"]              # compiled with musl-gcc -static -Os (else gcc -static)
    # binary = "bin/hello"             # or a prebuilt static x86-64 ELF

    [files]                            # what goes into the app layer under /app
    include = ["**"]
    exclude = ["*.md"]
    [files.copy]                       # extra files to exact guest paths
    "conf/prod.json" = "/etc/app.json"

    [env]
    WINDOW_SECONDS = "10"

    [resources]
    memory = "96M"                     # default: what the image needs to boot, at least 64M
    vcpus = 1

    [[ports]]
    port = 8080
    protocol = "tcp"

    [healthcheck]
    type = "http"
    port = 8080
    path = "/healthz"
    interval = "500ms"

    [kernel]
    profile = "minimal"

    [labels]
    "org.example.team" = "edge"

Every problem becomes a :class:`~ukedge.errors.UkfileError` naming the file, the field (dotted,
as written in the Ukfile) and what is wrong with it; unknown keys are errors too, so a typo never
silently changes an image.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ukedge.errors import UkfileError, UsageError
from ukedge.image import HealthCheck, PortSpec
from ukedge.units import parse_duration, parse_size
from ukedge.validation import first_problem

__all__ = [
    "UKFILE_NAME",
    "AppSection",
    "FilesSection",
    "KernelSection",
    "PythonSection",
    "ResourcesSection",
    "StaticSection",
    "Ukfile",
    "load_ukfile",
    "parse_duration",
]

UKFILE_NAME = "Ukfile"
_HOSTNAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\Z")
_APP_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?\Z")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def _to_duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str | int | float) else value


def _to_list(value: Any) -> Any:
    """``entrypoint = "python3 -u main.py"`` is a shorthand for the list form (no shell quoting)."""
    return value.split() if isinstance(value, str) else value


Command = Annotated[list[str], BeforeValidator(_to_list)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


#: Guest paths the platform owns: init, and what it mounts over (files put there would vanish).
_RESERVED = ("/init", "/proc", "/sys", "/dev", "/tmp", "/run", "/ukedge")


def _guest_path(value: str) -> str:
    p = PurePosixPath(value)
    if not p.is_absolute():
        raise ValueError(f"{value!r} must be an absolute path in the guest (start with '/')")
    if ".." in p.parts:
        raise ValueError(f"{value!r} must not contain '..'")
    return str(p)


def _file_dest(value: str) -> str:
    path = _guest_path(value)
    for reserved in _RESERVED:
        if path == reserved or path.startswith(reserved + "/"):
            raise ValueError(
                f"{value!r} is inside {reserved}, which ukedge's init owns or mounts over"
            )
    if path == "/":
        raise ValueError("'/' is not a place for app files; use a directory such as /app")
    return path


def _context_path(value: str) -> str:
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{value!r} must be a relative path inside the build directory")
    return str(p)


class AppSection(_Section):
    name: str
    runtime: str
    entrypoint: Command | None = None
    args: list[str] = Field(default_factory=list)
    workdir: str = "/app"
    #: When prewarm may snapshot the app: "ready" (health check passes), "pre-app" (before the
    #: app starts, for apps that cannot reseed on resume) or "off".
    snapshot: Literal["ready", "pre-app", "off"] = "ready"
    #: The guest hostname of every instance (default: each instance's name).
    hostname: str | None = None

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and not _HOSTNAME.match(v):
            raise ValueError(f"invalid hostname {v!r}: 1-63 letters, digits or '-'")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _APP_NAME.match(v):
            raise ValueError(
                f"invalid name {v!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        return v

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str) -> str:
        if v not in ("static", "python"):
            raise ValueError(f"unknown runtime {v!r}: expected 'static' or 'python'")
        return v

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not v[0]):
            raise ValueError("must name a program to run")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        return _guest_path(v)


class StaticSection(_Section):
    sources: list[str] = Field(default_factory=list)
    binary: str | None = None
    cflags: list[str] = Field(default_factory=list)
    ldflags: list[str] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        return [_context_path(s) for s in v]

    @field_validator("binary")
    @classmethod
    def _binary(cls, v: str | None) -> str | None:
        return None if v is None else _context_path(v)

    @model_validator(mode="after")
    def _one_of(self) -> StaticSection:
        if self.sources and self.binary:
            raise ValueError(
                "give either 'sources' (compiled by the builder) or 'binary', not both"
            )
        if not self.sources and not self.binary:
            raise ValueError("needs 'sources = [\"main.c\"]' or 'binary = \"path\"'")
        return self


class PythonSection(_Section):
    requirements: list[str] | None = None
    requirements_file: str | None = None

    @field_validator("requirements_file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        return None if v is None else _context_path(v)

    @model_validator(mode="after")
    def _one_of(self) -> PythonSection:
        if self.requirements is not None and self.requirements_file is not None:
            raise ValueError("give either 'requirements' or 'requirements_file', not both")
        return self


class FilesSection(_Section):
    include: list[str] = Field(default_factory=lambda: ["**"])
    exclude: list[str] = Field(default_factory=list)
    dest: str = "/app"
    copy_: dict[str, str] = Field(default_factory=dict, alias="copy")

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
                raise ValueError(f"pattern {pattern!r} must be relative to the build directory")
        return v

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str) -> str:
        return _file_dest(v)

    @field_validator("copy_")
    @classmethod
    def _copy(cls, v: dict[str, str]) -> dict[str, str]:
        return {_context_path(src): _file_dest(dst) for src, dst in v.items()}


class ResourcesSection(_Section):
    #: ``None``: the builder picks enough for the image to boot (at least 64 MiB; "Guest memory"
    #: in docs/image-format.md).
    memory: str | int | None = None
    vcpus: int = Field(default=1, ge=1, le=64)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | int | None:
        if v is None:
            return v
        try:
            size = parse_size(v, default_unit="M")
        except UsageError:
            raise ValueError(
                f"invalid size {v!r}: expected a number with K, M, G or T (e.g. 64M)"
            ) from None
        if size % (1 << 20):
            raise ValueError(f"{v!r} is not a whole number of MiB")
        if not 16 << 20 <= size <= 1 << 40:
            raise ValueError(f"{v!r} is out of range: the guest needs between 16M and 1T")
        return v

    @property
    def memory_mib(self) -> int | None:
        return None if self.memory is None else parse_size(self.memory, default_unit="M") >> 20


#: The Ukfile's spelling of the health check's durations (text such as "500ms", under short
#: names); the image's :class:`~ukedge.image.HealthCheck` is the one model of a health check,
#: so the table converts into it and errors name the field as the Ukfile writes it.
_HEALTHCHECK_DURATIONS = {
    "interval": "interval_s",
    "timeout": "timeout_s",
    "start_period": "start_period_s",
}


def _to_healthcheck(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    table: dict[str, Any] = {}
    for key, item in value.items():
        if key in _HEALTHCHECK_DURATIONS.values():
            raise _FieldError(f"healthcheck.{key}", "unknown key (check the spelling)")
        if key in _HEALTHCHECK_DURATIONS:
            try:
                item = _to_duration(item)
            except ValueError as exc:
                raise _FieldError(f"healthcheck.{key}", str(exc)) from None
            key = _HEALTHCHECK_DURATIONS[key]
        table[key] = item
    return table


def _ukfile_field(field: str) -> str:
    """``healthcheck.interval_s`` as the Ukfile spells it (``healthcheck.interval``)."""
    section, dot, name = field.partition(".")
    for written, model in _HEALTHCHECK_DURATIONS.items():
        if section == "healthcheck" and dot and name == model:
            return f"healthcheck.{written}"
    return field


class KernelSection(_Section):
    profile: str = "minimal"

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9_-]*$", v):
            raise ValueError(f"invalid profile name {v!r}")
        return v


class Ukfile(_Section):
    """A parsed, validated Ukfile. ``path`` and ``context`` are set by :func:`load_ukfile`."""

    app: AppSection
    static: StaticSection | None = None
    python: PythonSection | None = None
    files: FilesSection = Field(default_factory=FilesSection)
    env: dict[str, str] = Field(default_factory=dict)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    ports: list[PortSpec] = Field(default_factory=list)
    healthcheck: Annotated[HealthCheck | None, BeforeValidator(_to_healthcheck)] = None
    kernel: KernelSection = Field(default_factory=KernelSection)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if "\0" in value or "\n" in value:
                raise ValueError(f"{key}: value must not contain NUL or newline characters")
        return v

    @model_validator(mode="after")
    def _runtime_sections(self) -> Ukfile:
        runtime = self.app.runtime
        if runtime == "static" and self.static is None:
            raise _FieldError(
                "static", "runtime 'static' needs a [static] table with 'sources' or 'binary'"
            )
        if runtime != "static" and self.static is not None:
            raise _FieldError("static", f"only valid with runtime = 'static' (this is {runtime!r})")
        if runtime != "python" and self.python is not None:
            raise _FieldError("python", f"only valid with runtime = 'python' (this is {runtime!r})")
        ports = [(p.port, p.protocol) for p in self.ports]
        if len(set(ports)) != len(ports):
            raise _FieldError("ports", "the same port is declared twice")
        hc = self.healthcheck
        if hc is not None and (hc.port, "tcp") not in ports:
            raise _FieldError(
                "healthcheck.port",
                f"port {hc.port} is not declared; add [[ports]] port = {hc.port} so a host can "
                "reach it",
            )
        return self


class _FieldError(ValueError):
    """Raised inside validators that know the exact field, so the report names it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(problem)


def load_ukfile(path: Path) -> Ukfile:
    """Read and validate a Ukfile; ``path`` may be the file or its directory (the build context)."""
    path = Path(path)
    if not path.exists():
        raise UkfileError(str(path), None, "does not exist (give a directory holding a Ukfile)")
    if path.is_dir():
        path = path / UKFILE_NAME
    shown = str(path)
    if not path.is_file():
        raise UkfileError(shown, None, f"no Ukfile in {path.parent}; create one (see examples/)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UkfileError(shown, None, f"invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise UkfileError(shown, None, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    try:
        # Strict as the Ukfile's own sections are, for the image's models it uses too: a port
        # written as "8080" is a mistake to report, not to coerce.
        model = Ukfile.model_validate(raw, strict=True)
    except _FieldError as exc:
        raise UkfileError(shown, exc.field, exc.problem) from exc
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        ctx = first.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, _FieldError):
            raise UkfileError(shown, inner.field, inner.problem) from exc
        field, problem = first_problem(errors)
        raise UkfileError(shown, _ukfile_field(field) or None, problem) from exc
    return model
