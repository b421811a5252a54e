"""Durable instance records in SQLite.

One row per instance, the full :class:`Instance` as JSON beside the columns that are looked up
(id, name). Every change is one transaction, so a crash leaves either the old record or the new
one, and several CLI processes (or the CLI beside the agent) can share the file: SQLite's own
locking serialises writers, WAL keeps readers from waiting.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ukedge.errors import InstanceError, NoSuchInstanceError
from ukedge.host._models import Instance
from ukedge.host.instances._records import RecordFile

__all__ = ["Guard", "InstanceRecords"]

#: Checks a record about to be written against all the others; raises to refuse the write.
Guard = Callable[[Instance, list[Instance]], None]


def _like_prefix(key: str) -> str:
    """``key`` as a LIKE prefix pattern with ``/`` as the escape character."""
    escaped = key.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"


class InstanceRecords(RecordFile):
    """The records as :class:`Instance` models, and every change to them."""

    def add(self, instance: Instance, *, guard: Guard | None = None) -> None:
        """Insert a record; ``guard`` sees every other record in the same transaction and may
        raise to refuse (admission, ports), so two processes cannot both take the last room."""
        try:
            with self._db.write() as db:
                if guard is not None:
                    guard(instance, self._others(db, instance.id))
                db.execute(
                    "INSERT INTO instances (id, name, doc) VALUES (?, ?, ?)",
                    (instance.id, instance.name, instance.model_dump_json()),
                )
        except sqlite3.IntegrityError as exc:
            raise InstanceError(
                f"the name {instance.name!r} is already in use; remove that instance "
                "(`ukedge rm`) or choose another --name"
            ) from exc

    def update(self, instance_id: str, change: Callable[[Instance], Instance]) -> Instance:
        """Read, change and write one record in a single transaction."""
        return self.change(instance_id, change)[1]

    def change(
        self,
        instance_id: str,
        change: Callable[[Instance], Instance],
        *,
        guard: Guard | None = None,
    ) -> tuple[Instance, Instance]:
        """Read, change and write one record in a single transaction; returns (before, after).

        ``guard`` runs inside the transaction on the changed record and all the others. Nothing
        is written when the change returns an equal record.
        """
        with self._db.write() as db:
            row = db.execute("SELECT doc FROM instances WHERE id = ?", (instance_id,)).fetchone()
            if row is None:
                raise NoSuchInstanceError(f"no such instance: {instance_id}")
            before = Instance.model_validate_json(row[0])
            after = change(before)
            if after != before:
                if guard is not None:
                    guard(after, self._others(db, instance_id))
                db.execute(
                    "UPDATE instances SET doc = ? WHERE id = ?",
                    (after.model_dump_json(), instance_id),
                )
            return before, after

    @staticmethod
    def _others(db: sqlite3.Connection, instance_id: str) -> list[Instance]:
        rows = db.execute("SELECT doc FROM instances WHERE id != ?", (instance_id,))
        return [Instance.model_validate_json(doc) for (doc,) in rows]

    def delete(self, instance_id: str) -> None:
        with self._db.write() as db:
            db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))

    def all(self) -> list[Instance]:
        return [Instance.model_validate_json(doc) for doc in self.docs()]

    def find(self, key: str) -> Instance:
        """By name, full id or unique id prefix — as ``docker`` resolves container names."""
        with self._db.read() as db:
            row = db.execute("SELECT doc FROM instances WHERE name = ?", (key,)).fetchone()
            if row is None:
                rows = db.execute(
                    "SELECT doc FROM instances WHERE id LIKE ? ESCAPE '/'", (_like_prefix(key),)
                ).fetchall()
                if len(rows) > 1:
                    raise InstanceError(
                        f"instance id prefix {key!r} is ambiguous; give more digits"
                    )
                row = rows[0] if rows and len(key) >= 3 else None
        if row is None:
            raise NoSuchInstanceError(f"no such instance: {key} (see `ukedge ps -a`)")
        return Instance.model_validate_json(row[0])
