"""Controller settings, from (lowest to highest precedence) defaults, a TOML file,
``UKEDGE_CONTROLLER_*`` environment variables and explicit values (command-line flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ukedge import config, paths

__all__ = ["DEFAULT_ADDR", "ENV_PREFIX", "ControllerSettings", "load_controller_settings"]

ENV_PREFIX = "UKEDGE_CONTROLLER_"
DEFAULT_ADDR = "0.0.0.0:7700"
_DB_SCHEMES = ("sqlite://", "postgresql://", "postgresql+psycopg://")


class ControllerSettings(BaseModel):
    """What ``ukedge controller serve`` is told, by flag, variable or TOML file."""

    model_config = ConfigDict(extra="forbid")

    #: Holds the SQLite database (unless ``db`` names another), the TLS identity, the admin token.
    data_dir: Path = Field(default_factory=lambda: paths.home() / "controller")
    #: HTTPS address of the API (always TLS: nodes pin the certificate).
    addr: config.ListenAddr = config.ListenAddr(DEFAULT_ADDR)
    #: SQLAlchemy-style URL: ``sqlite:///PATH`` or ``postgresql://USER@HOST/DB``; default: the
    #: SQLite file ``controller.db`` in ``data_dir``.
    db: str | None = None
    #: Seconds without a heartbeat after which a node is NotReady.
    not_ready_after_s: float = Field(default=15.0, gt=0, le=86_400)
    #: Seconds a NotReady node's replicas are left before being placed elsewhere (after the
    #: NotReady timeout: replaced ``not_ready_after_s + grace_s`` after the last heartbeat).
    grace_s: float = Field(default=10.0, ge=0, le=86_400)
    #: How often agents are asked to heartbeat.
    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=3600)
    #: Seconds between the leader's reconcile passes.
    tick_s: float = Field(default=1.0, gt=0, le=60)
    scoring: Literal["least-allocated", "bin-pack"] = "least-allocated"
    #: Rebalancing by moves: a node whose replicas and other instances hold more than this
    #: share of its memory has replicas moved off, one at a time, to nodes that take part in
    #: moves and stay at or below it (None: off).
    rebalance_above: float | None = Field(default=None, gt=0, lt=1)
    #: How rebalancing moves a replica (with its memory either way).
    rebalance_mode: Literal["snapshot", "live"] = "live"
    #: MQTT brokers (``mqtt://broker:1883``) the leader republishes every stored result to.
    mqtt: list[str] = Field(default_factory=list)
    #: Public keys (cosign PEM) whose signature a deployment with ``require_signature`` needs.
    trusted_keys: list[Path] = Field(default_factory=list)
    log_format: Literal["json", "text"] = "json"
    access_log: bool = True

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        return config.check_listen_addr(value, example=DEFAULT_ADDR)

    @field_validator("db")
    @classmethod
    def _db(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_DB_SCHEMES):
            raise ValueError(
                f"{value!r} is not a database URL: expected sqlite:///PATH or "
                "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            )
        return value

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'controller.db'}"

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls.crt"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "tls.key"

    @property
    def token_path(self) -> Path:
        return self.data_dir / "admin.token"


def load_controller_settings(
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> ControllerSettings:
    """Defaults < ``config_file`` (``[controller]`` or top level) < ``UKEDGE_CONTROLLER_*`` <
    ``overrides`` (flags; ``None`` means not given)."""
    return config.load_settings(
        ControllerSettings,
        env_prefix=ENV_PREFIX,
        section="controller",
        config_file=config_file,
        environ=environ,
        overrides=overrides,
    )
