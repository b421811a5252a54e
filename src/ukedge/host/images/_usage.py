"""When each image of a node's store was pulled and last used, kept across restarts.

The order in which the image cache evicts must survive an agent restart, or a restarted node
would evict the image it ran a minute ago. One small SQLite table beside the store: WAL and a
busy timeout, every change one ``BEGIN IMMEDIATE`` transaction, so the agent and a local CLI
working on the same store serialise their writes instead of overwriting each other, and a crash
leaves the old row or the new one. Rows are keyed by manifest digest: instances and eviction deal
in images, not in the tags that name them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ukedge.errors import ImageError
from ukedge.sqlite import SQLiteFile

__all__ = ["ImageUsage", "UsageRecord"]

#: The table as SQLAlchemy created it before the store moved to :mod:`sqlite3` (same text).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS image_usage (\n\tdigest TEXT NOT NULL, \n\tpulled_at FLOAT, "
    "\n\tlast_used FLOAT, \n\tPRIMARY KEY (digest)\n)",
)
#: Upserts of one time column; the column name comes from this table, never from a caller.
_SET = {
    column: f"INSERT INTO image_usage (digest, {column}) VALUES (?, ?) "
    f"ON CONFLICT (digest) DO UPDATE SET {column} = excluded.{column}"
    for column in ("pulled_at", "last_used")
}


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
        # A power cut may lose the last few touches (an eviction order slightly off), never the
        # table: WAL with synchronous=NORMAL syncs at checkpoints, not at every commit. The
        # pool keeps the connections open for the life of the cache, so a touch does not
        # checkpoint the file as closing its last connection would.
        self._db = SQLiteFile(
            path, what="the image usage table", error=ImageError, synchronous="NORMAL"
        )
        self._db.create(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _set(self, column: str, digest: str, when: float | None) -> None:
        with self._db.write() as db:
            db.execute(_SET[column], (digest, time.time() if when is None else when))

    def touch(self, digest: str, when: float | None = None) -> None:
        """An instance started from ``digest`` now (or at ``when``)."""
        self._set("last_used", digest, when)

    def pulled(self, digest: str, when: float | None = None) -> None:
        """``digest`` was pulled now (or at ``when``)."""
        self._set("pulled_at", digest, when)

    def all(self) -> dict[str, UsageRecord]:
        with self._db.read() as db:
            rows = db.execute("SELECT digest, pulled_at, last_used FROM image_usage")
            return {row[0]: UsageRecord(row[0], row[1], row[2]) for row in rows}

    def forget(self, digests: Iterable[str]) -> None:
        """Drop the rows of images that left the store."""
        gone = [(d,) for d in digests]
        if gone:
            with self._db.write() as db:
                db.executemany("DELETE FROM image_usage WHERE digest = ?", gone)
