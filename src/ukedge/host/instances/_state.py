"""Durable instance records in SQLite.

One row per instance, the full :class:`Instance` as JSON beside the columns that are looked up
(id, name). Every change is one transaction, so a crash leaves either the old record or the new
one, and several CLI processes (or the CLI beside the agent) can share the file: SQLite's own
locking serialises writers, WAL keeps readers from waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ukedge.errors import InstanceError, NoSuchInstanceError
from ukedge.host._models import Instance
from ukedge.sqlite import SQLiteDatabase

__all__ = ["Guard", "InstanceRecords"]

#: Checks a record about to be written against all the others; raises to refuse the write.
Guard = Callable[[Instance, list[Instance]], None]


class _Base(DeclarativeBase):
    pass


class _InstanceRow(_Base):
    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    doc: Mapped[str] = mapped_column(Text)


class InstanceRecords:
    def __init__(self, path: Path) -> None:
        # synchronous=FULL: a record written is there after a power cut too (it names a VM).
        # Every transaction, reads too, is BEGIN IMMEDIATE (ukedge.sqlite): read-modify-write
        # sequences from several processes serialise instead of failing at commit.
        self._db = SQLiteDatabase(path, what="instance records", synchronous="FULL")
        self._db.create_all(_Base.metadata)

    def add(self, instance: Instance, *, guard: Guard | None = None) -> None:
        """Insert a record; ``guard`` sees every other record in the same transaction and may
        raise to refuse (admission, ports), so two processes cannot both take the last room."""
        try:
            with self._db.session() as session:
                if guard is not None:
                    guard(instance, self._others(session, instance.id))
                session.add(
                    _InstanceRow(id=instance.id, name=instance.name, doc=instance.model_dump_json())
                )
        except IntegrityError as exc:
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
        with self._db.session() as session:
            row = session.get(_InstanceRow, instance_id)
            if row is None:
                raise NoSuchInstanceError(f"no such instance: {instance_id}")
            before = Instance.model_validate_json(row.doc)
            after = change(before)
            if after != before:
                if guard is not None:
                    guard(after, self._others(session, instance_id))
                row.doc = after.model_dump_json()
            return before, after

    @staticmethod
    def _others(session: Session, instance_id: str) -> list[Instance]:
        rows = session.scalars(select(_InstanceRow).where(_InstanceRow.id != instance_id)).all()
        return [Instance.model_validate_json(row.doc) for row in rows]

    def delete(self, instance_id: str) -> None:
        with self._db.session() as session:
            row = session.get(_InstanceRow, instance_id)
            if row is not None:
                session.delete(row)

    def all(self) -> list[Instance]:
        with Session(self._db.engine) as session:
            rows = session.scalars(select(_InstanceRow)).all()
            return [Instance.model_validate_json(row.doc) for row in rows]

    def find(self, key: str) -> Instance:
        """By name, full id or unique id prefix — as ``docker`` resolves container names."""
        with Session(self._db.engine) as session:
            row = session.scalars(select(_InstanceRow).where(_InstanceRow.name == key)).first()
            if row is None:
                rows = session.scalars(
                    select(_InstanceRow).where(_InstanceRow.id.startswith(key, autoescape=True))
                ).all()
                if len(rows) > 1:
                    raise InstanceError(
                        f"instance id prefix {key!r} is ambiguous; give more digits"
                    )
                row = rows[0] if rows and len(key) >= 3 else None
            if row is None:
                raise NoSuchInstanceError(f"no such instance: {key} (see `ukedge ps -a`)")
            return Instance.model_validate_json(row.doc)

    def close(self) -> None:
        self._db.close()
