"""Hub settings, from (lowest to highest precedence) defaults, a TOML file, ``UKEDGE_HUB_*``
environment variables, and explicit values (command-line flags)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ukedge import paths
from ukedge.errors import UsageError

__all__ = ["ENV_PREFIX", "HubSettings", "load_settings"]

ENV_PREFIX = "UKEDGE_HUB_"
_LIST_FIELDS = {"anonymous_pull"}
_DICT_FIELDS = {"storage_config"}


class HubSettings(BaseModel):
    """Everything ``hub serve``, ``hub gc`` and the user/token commands need to know."""

    model_config = ConfigDict(extra="forbid")

    #: Holds ``hub.db``, the token signing key and (by default) the blob storage.
    data_dir: Path = Field(default_factory=lambda: paths.home() / "hub")
    addr: str = "127.0.0.1:5000"
    #: ``auto``: on as soon as a user or robot token exists; ``on``/``off`` force it.
    auth: Literal["auto", "on", "off"] = "auto"
    #: Glob patterns of repositories anyone may pull without credentials (``public/*``).
    anonymous_pull: list[str] = Field(default_factory=list)
    #: The ``service`` of tokens and challenges; ``realm`` defaults to ``<request base>/token``.
    service: str = "ukedge-hub"
    realm: str | None = None
    token_ttl: int = Field(default=300, ge=10)
    #: Seconds between online GC runs inside ``hub serve``; 0 turns scheduled GC off.
    gc_interval: float = Field(default=0, ge=0)
    #: Blobs touched (uploaded or mounted) more recently than this are never swept.
    gc_grace: float = Field(default=1800, ge=0)
    #: Upload sessions idle longer than this are expired by GC.
    upload_ttl: float = Field(default=86400, ge=0)
    storage_driver: str = "filesystem"
    #: Driver options; the filesystem driver's ``root`` defaults to ``<data_dir>/storage``.
    storage_config: dict[str, Any] = Field(default_factory=dict)
    fsync: bool = True
    max_manifest_bytes: int = 4 * 1024 * 1024
    log_format: Literal["json", "text"] = "json"
    access_log: bool = True

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT (for example 127.0.0.1:5000)")
        return value

    @property
    def host(self) -> str:
        return self.addr.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.addr.rpartition(":")[2])

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hub.db"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "token-key.pem"

    def driver_config(self) -> dict[str, Any]:
        config = dict(self.storage_config)
        if self.storage_driver == "filesystem":
            config.setdefault("root", str(self.data_dir / "storage"))
            config.setdefault("fsync", self.fsync)
        return config


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in HubSettings.model_fields:
        raw = environ.get(ENV_PREFIX + field.upper())
        if raw is None:
            continue
        if field in _LIST_FIELDS:
            values[field] = [part.strip() for part in raw.split(",") if part.strip()]
        elif field in _DICT_FIELDS:
            values[field] = json.loads(raw)
        else:
            values[field] = raw
    return values


def load_settings(
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> HubSettings:
    """Merge the sources; ``None`` overrides are ignored so unset flags do not mask the rest.

    The TOML file may hold the keys at top level or under a ``[hub]`` table. Raises
    :class:`~ukedge.errors.UsageError` naming the bad setting.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read hub config {config_file}: {exc}") from exc
        values.update(data.get("hub", data))
    try:
        values.update(_from_env(dict(os.environ if environ is None else environ)))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{ENV_PREFIX}STORAGE_CONFIG is not JSON: {exc}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return HubSettings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise UsageError(f"invalid hub settings: {problems}") from exc
