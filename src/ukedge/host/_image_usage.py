"""When each image of a node's store was pulled and last used, kept across restarts.

The order in which the image cache evicts must survive an agent restart, or a restarted node
would evict the image it ran a minute ago. One small SQLite table beside the store: WAL and a
busy timeout, every change one ``BEGIN IMMEDIATE`` transaction, so the agent and a local CLI
working on the same store serialise their writes instead of overwriting each other, and a crash
leaves the old row or the new one. Rows are keyed by manifest digest: instances and eviction deal
in images, not in the tags that name them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ukedge.errors import ImageError

__all__ = ["ImageUsage", "UsageRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS image_usage (
    digest    TEXT PRIMARY KEY,
    pulled_at REAL,
    last_used REAL
)
"""


@dataclass(frozen=True)
class UsageRecord:
    digest: str
    #: When the image was last pulled (a pull of an image already held counts too).
    pulled_at: float | None
    #: When an instance last started from it.
    last_used: float | None


class ImageUsage:
    """Pull and use times of images, by manifest digest, in ``path`` (SQLite)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection for the life of the cache, shared by the agent's threads under a lock:
        # closing the last connection to a WAL database checkpoints it, which would make every
        # touch cost a checkpoint if each opened its own.
        try:
            self._db = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ImageError(f"cannot open the image usage table {path}: {exc}") from exc
        self._finalizer = weakref.finalize(self, self._db.close)
        self._lock = threading.Lock()
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # A power cut may lose the last few touches (an eviction order slightly off),
            # never the table: WAL with NORMAL syncs at checkpoints, not at every commit.
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            self.close()
            raise ImageError(f"the image usage table {path}: {exc}") from exc
        with self._transaction() as db:
            db.execute(_SCHEMA)

    def close(self) -> None:
        self._finalizer()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ImageError(f"the image usage table {self.path}: {exc}") from exc

    def touch(self, digest: str, when: float | None = None) -> None:
        """An instance started from ``digest`` now (or at ``when``)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO image_usage (digest, last_used) VALUES (?, ?) "
                "ON CONFLICT (digest) DO UPDATE SET last_used = excluded.last_used",
                (digest, time.time() if when is None else when),
            )

    def pulled(self, digest: str, when: float | None = None) -> None:
        """``digest`` was pulled now (or at ``when``)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO image_usage (digest, pulled_at) VALUES (?, ?) "
                "ON CONFLICT (digest) DO UPDATE SET pulled_at = excluded.pulled_at",
                (digest, time.time() if when is None else when),
            )

    def all(self) -> dict[str, UsageRecord]:
        with self._transaction() as db:
            rows = db.execute("SELECT digest, pulled_at, last_used FROM image_usage").fetchall()
        return {row[0]: UsageRecord(row[0], row[1], row[2]) for row in rows}

    def forget(self, digests: Iterable[str]) -> None:
        """Drop the rows of images that left the store."""
        with self._transaction() as db:
            db.executemany("DELETE FROM image_usage WHERE digest = ?", [(d,) for d in digests])
