"""Hub settings, from (lowest to highest precedence) defaults, a TOML file, ``UKEDGE_HUB_*``
environment variables, and explicit values (command-line flags)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ukedge import config, paths

__all__ = ["ENV_PREFIX", "HubSettings", "load_settings"]

ENV_PREFIX = "UKEDGE_HUB_"


class HubSettings(BaseModel):
    """Everything ``hub serve``, ``hub gc`` and the user/token commands need to know."""

    model_config = ConfigDict(extra="forbid")

    #: Holds ``hub.db``, the token signing key and (by default) the blob storage.
    data_dir: Path = Field(default_factory=lambda: paths.home() / "hub")
    addr: config.ListenAddr = config.ListenAddr("127.0.0.1:5000")
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
    #: Addresses or networks (``10.0.0.0/8``) of reverse proxies whose ``X-Forwarded-For`` and
    #: ``X-Forwarded-Proto`` are believed. None by default: the login throttle counts the peer's
    #: own address, which no client can choose.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Seconds a request body may stall (no bytes arrive) before the hub gives up on it (408);
    #: bounds how long a silent client holds an upload session.
    body_timeout: float = Field(default=60, gt=0)

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        return config.check_listen_addr(value, example="127.0.0.1:5000")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted proxy {item!r} is not an IP address or network (10.0.0.5, 10.0.0.0/8)"
                ) from None
        return value

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


def load_settings(
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> HubSettings:
    """Merge defaults, ``config_file`` (keys at top level or under ``[hub]``), ``UKEDGE_HUB_*``
    variables and ``overrides`` (``None`` values ignored); see :func:`ukedge.config.load_settings`.
    """
    return config.load_settings(
        HubSettings,
        env_prefix=ENV_PREFIX,
        section="hub",
        config_file=config_file,
        environ=environ,
        overrides=overrides,
    )
