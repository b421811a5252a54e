from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import String, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ukedge.errors import InstanceError
from ukedge.host import Instance, InstanceState
from ukedge.host.instances._state import InstanceRecords


def _instance(id_: str, name: str) -> Instance:
    return Instance(
        id=id_,
        name=name,
        image="app:1",
        image_digest="sha256:" + "0" * 64,
        state=InstanceState.CREATED,
        created_at=time.time(),
        memory_mib=64,
        vcpus=1,
        workdir="/tmp/x",
    )


def test_names_are_unique_and_lookup_by_name_or_prefix(tmp_path: Path) -> None:
    records = InstanceRecords(tmp_path / "state.db")
    records.add(_instance("abc123", "one"))
    records.add(_instance("abd456", "two"))
    with pytest.raises(InstanceError, match="already in use"):
        records.add(_instance("fff000", "one"))
    assert records.find("one").id == "abc123"
    assert records.find("abd").name == "two"
    with pytest.raises(InstanceError, match="ambiguous"):
        records.find("ab")
    with pytest.raises(InstanceError, match="no such instance: zzz"):
        records.find("zzz")


def test_update_is_persisted_across_handles(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    InstanceRecords(db).add(_instance("abc123", "one"))
    InstanceRecords(db).update(
        "abc123", lambda i: i.model_copy(update={"state": InstanceState.EXITED, "exit_code": 3})
    )
    again = InstanceRecords(db).find("one")
    assert (again.state, again.exit_code) == (InstanceState.EXITED, 3)


def test_update_of_unknown_instance_fails(tmp_path: Path) -> None:
    with pytest.raises(InstanceError, match="no such instance"):
        InstanceRecords(tmp_path / "state.db").update("nope", lambda i: i)


def test_change_returns_both_sides_and_writes_nothing_when_equal(tmp_path: Path) -> None:
    records = InstanceRecords(tmp_path / "state.db")
    records.add(_instance("abc123", "one"))
    before, after = records.change(
        "abc123", lambda i: i.model_copy(update={"state": InstanceState.RUNNING})
    )
    assert (before.state, after.state) == (InstanceState.CREATED, InstanceState.RUNNING)
    same_before, same_after = records.change("abc123", lambda i: i)
    assert same_before == same_after == after


def test_guards_see_the_other_records_and_refuse_inside_the_transaction(tmp_path: Path) -> None:
    records = InstanceRecords(tmp_path / "state.db")
    records.add(_instance("abc123", "one"))

    def at_most_one(instance: Instance, others: list[Instance]) -> None:
        if others:
            raise InstanceError(f"{instance.name}: {[o.name for o in others]} exist")

    with pytest.raises(InstanceError, match=r"two: \['one'\] exist"):
        records.add(_instance("def456", "two"), guard=at_most_one)
    assert [i.name for i in records.all()] == ["one"]
    records.add(_instance("def456", "two"))
    with pytest.raises(InstanceError, match="exist"):
        records.change(
            "abc123",
            lambda i: i.model_copy(update={"state": InstanceState.RUNNING}),
            guard=at_most_one,
        )
    assert records.find("one").state is InstanceState.CREATED


class _OldBase(DeclarativeBase):
    pass


class _OldRow(_OldBase):
    """The records' table as the store declared it through SQLAlchemy's ORM until sqlite3."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    doc: Mapped[str] = mapped_column(Text)


def _schema(path: Path) -> list[tuple[str, str, str | None]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    return [(str(t), str(n), s) for t, n, s in rows]


def test_a_store_written_through_sqlalchemy_opens_unchanged(tmp_path: Path) -> None:
    """Data directories from before the store moved to sqlite3 (the table declared through
    SQLAlchemy's ORM, as it was) open, read and take writes; new files get the same schema."""
    old = tmp_path / "old" / "state.db"
    old.parent.mkdir()
    engine = create_engine(f"sqlite:///{old}")
    _OldBase.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(
            _OldRow(id="abc123", name="one", doc=_instance("abc123", "one").model_dump_json())
        )
    engine.dispose()

    records = InstanceRecords(old)
    assert records.find("abc").name == "one"
    records.add(_instance("def456", "two"))
    with pytest.raises(InstanceError, match="already in use"):
        records.add(_instance("fff000", "one"))  # the old unique index holds
    assert sorted(i.name for i in records.all()) == ["one", "two"]
    records.close()

    fresh = tmp_path / "new" / "state.db"
    InstanceRecords(fresh).close()
    assert _schema(fresh) == _schema(old)


def test_record_fields_are_what_the_model_writes(tmp_path: Path) -> None:
    """ps's model-free path trusts a record whose fields are exactly :data:`RECORD_FIELDS`."""
    from ukedge.host import instance_docs
    from ukedge.host.instances._records import RECORD_FIELDS

    assert tuple(Instance.model_fields) == RECORD_FIELDS
    records = InstanceRecords(tmp_path / "state.db")
    records.add(_instance("a" * 32, "one"))
    records.close()
    docs = instance_docs(tmp_path)
    assert docs is not None and tuple(docs[0]) == RECORD_FIELDS
    # A record an older version wrote (no labels yet) is left to the model, which fills it.
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
        doc = dict(docs[0])
        del doc["labels"]
        db.execute("UPDATE instances SET doc = ?", (json.dumps(doc),))
    assert instance_docs(tmp_path) is None
