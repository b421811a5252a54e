"""Entry points behind the ``ukedge hub`` commands: serve, users, robot tokens, GC, fsck."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from ukedge import server, serverlog
from ukedge.hub._app import Hub, create_app
from ukedge.hub._auth import RobotToken
from ukedge.hub._fsck import FsckReport, check
from ukedge.hub._gc import GcReport
from ukedge.hub._settings import HubSettings

__all__ = [
    "add_user",
    "create_robot_token",
    "open_hub",
    "run_fsck",
    "run_gc",
    "serve",
    "server_config",
]

log = logging.getLogger(__name__)


def serve(settings: HubSettings) -> None:
    """Reconcile metadata with storage, then run the hub under uvicorn until interrupted."""
    serverlog.configure(settings.log_format)
    hub = open_hub(settings)
    listener = server.tcp_listener(settings.addr.host, settings.addr.port)
    server.run(create_app(settings, hub), [listener], trusted_proxies=settings.trusted_proxies)


def open_hub(settings: HubSettings) -> Hub:
    """The hub of a server about to listen (``hub serve``, ``ukedge up``): its metadata
    reconciled with storage first (size-only check, repairing), as every start must."""
    hub = Hub(settings)
    report = asyncio.run(check(hub.db, hub.storage, verify=False, repair=True))
    log.info(
        "start-up check: %d blobs, %d problems (%d repaired), %d stray files",
        report.blobs_checked,
        len(report.problems),
        len(report.problems) - len(report.unrepaired),
        report.strays,
    )
    if not hub.auth.enabled and settings.addr.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "auth is off and the hub listens on %s: anyone who reaches it can push and delete; "
            "add a user (ukedge hub user add) or pass --auth on",
            settings.addr,
        )
    return hub


def server_config(settings: HubSettings, app: ASGIApp, **overrides: Any) -> uvicorn.Config:
    """How uvicorn runs the hub on its own address (tests that serve a hub in-process)."""
    return server.uvicorn_config(
        app,
        trusted_proxies=settings.trusted_proxies,
        host=settings.addr.host,
        port=settings.addr.port,
        **overrides,
    )


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


def run_fsck(settings: HubSettings, *, repair: bool = False, verify: bool = True) -> FsckReport:
    """Check (and repair) metadata against storage; safe while ``hub serve`` runs."""
    hub = Hub(settings)
    try:
        return asyncio.run(check(hub.db, hub.storage, verify=verify, repair=repair))
    finally:
        hub.close()
