"""Entry points behind the ``ukedge hub`` commands: serve, users, robot tokens, GC."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import uvicorn

from ukedge.hub._app import Hub, create_app
from ukedge.hub._auth import RobotToken
from ukedge.hub._gc import GcReport
from ukedge.hub._settings import HubSettings

__all__ = ["JsonFormatter", "add_user", "create_robot_token", "run_gc", "serve"]

log = logging.getLogger(__name__)
_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _configure_logging(settings: HubSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("ukedge")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def serve(settings: HubSettings) -> None:
    """Run the hub under uvicorn until interrupted (blocks)."""
    _configure_logging(settings)
    hub = Hub(settings)
    if not hub.auth.enabled and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "auth is off and the hub listens on %s: anyone who reaches it can push and delete; "
            "add a user (ukedge hub user add) or pass --auth on",
            settings.addr,
        )
    app = create_app(settings, hub)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()


def add_user(settings: HubSettings, name: str, password: str, grants: list[str] | None) -> None:
    hub = Hub(settings)
    try:
        hub.auth.add_user(name, password, grants)
    finally:
        hub.close()


def create_robot_token(
    settings: HubSettings, name: str, grants: list[str], expires_in: float | None = None
) -> RobotToken:
    hub = Hub(settings)
    try:
        return hub.auth.create_robot(name, grants, expires_in)
    finally:
        hub.close()


def run_gc(settings: HubSettings, *, dry_run: bool = False) -> GcReport:
    """One GC pass from outside the server; safe while ``hub serve`` runs on the same data."""
    hub = Hub(settings)
    try:
        return asyncio.run(hub.gc(dry_run=dry_run))
    finally:
        hub.close()
