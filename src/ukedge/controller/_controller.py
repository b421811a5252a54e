"""The controller's composition root: settings, identity, database (migrated), notifier, loop.

Built once per process by ``serve`` (and by tests and ``ukedge up``); the API routes are thin
over the modules it wires. Opening it makes the data directory (0700), the TLS identity and
admin token on first start, and brings the schema to the newest migration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import make_url

from ukedge import paths
from ukedge.controller._bridge import ResultBridge
from ukedge.controller._db import Database
from ukedge.controller._heartbeats import HeartbeatWriter
from ukedge.controller._identity import Identity, ensure_identity
from ukedge.controller._loop import Planner, ReconcileLoop, default_planner
from ukedge.controller._migrate import upgrade
from ukedge.controller._pinning import PinnedImage, pin_image
from ukedge.controller._results import Notifier
from ukedge.controller._settings import ControllerSettings
from ukedge.image import read_public_keys

__all__ = ["Controller"]


class Controller:
    def __init__(
        self,
        settings: ControllerSettings,
        *,
        clock: Callable[[], float] = time.time,
        pinner: Callable[[str, list[str]], PinnedImage] = pin_image,
        planner: Planner | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.pinner = pinner
        #: Keys a deployment that requires signatures must be signed by (read once, at start).
        self.trusted_keys = read_public_keys(settings.trusted_keys)
        self.identity: Identity = ensure_identity(
            settings.data_dir, settings.cert_path, settings.key_path, settings.token_path
        )
        url = make_url(settings.db_url)
        if url.get_backend_name() == "sqlite" and url.database:
            # Before SQLite opens it: its -wal and -shm files take the database file's mode.
            path = Path(url.database)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            paths.private_file(path)
        self.db = Database(settings.db_url)
        upgrade(self.db)
        self.notifier = Notifier()
        #: Heartbeats in group commits: one writer on SQLite (its writes serialise anyway).
        self.heartbeats = HeartbeatWriter(
            self.db,
            clock=self.now,
            interval=settings.heartbeat_interval_s,
            writers=1 if self.db.dialect == "sqlite" else 2,
        )
        self._planner = planner
        self.loop: ReconcileLoop | None = None
        #: Republishes stored results to the settings' MQTT brokers (None: none named).
        self.bridge: ResultBridge | None = None
        if settings.mqtt:
            from ukedge.host.results import sinks

            self.bridge = ResultBridge(self.db, [sinks.create(url, url) for url in settings.mqtt])

    def make_loop(self) -> ReconcileLoop:
        settings = self.settings
        self.loop = ReconcileLoop(
            self.db,
            self._planner or default_planner(),
            tick_s=settings.tick_s,
            not_ready_after_s=settings.not_ready_after_s,
            grace_s=settings.grace_s,
            strategy=settings.scoring,
            rebalance_above=settings.rebalance_above,
            rebalance_mode=settings.rebalance_mode,
            clock=self.clock,
        )
        return self.loop

    def now(self) -> float:
        return self.clock()

    def close(self) -> None:
        self.heartbeats.close()
        if self.bridge is not None:
            self.bridge.close()
        if self.loop is not None:
            # A pass run outside the loop's task (tests, tools) may hold the leader's session:
            # disposing the engine leaves checked-out connections open.
            self.loop.leadership.release()
        self.db.close()
