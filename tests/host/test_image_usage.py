"""The image usage table: upserts per column, forgetting, files from before sqlite3, errors."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from ukedge.errors import ImageError
from ukedge.host.images._usage import ImageUsage


def _schema(path: Path) -> list[tuple[str, str, str | None]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    return [(str(t), str(n), s) for t, n, s in rows]


def test_pull_and_use_times_are_kept_apart_and_forgotten(tmp_path: Path) -> None:
    usage = ImageUsage(tmp_path / "usage.db")
    usage.pulled("sha256:a", 10.0)
    usage.touch("sha256:a", 20.0)
    usage.touch("sha256:b", 30.0)
    usage.pulled("sha256:a", 40.0)  # a second pull moves only the pull time
    rows = usage.all()
    assert (rows["sha256:a"].pulled_at, rows["sha256:a"].last_used) == (40.0, 20.0)
    assert (rows["sha256:b"].pulled_at, rows["sha256:b"].last_used) == (None, 30.0)
    usage.forget(["sha256:a", "sha256:missing"])
    assert list(ImageUsage(tmp_path / "usage.db").all()) == ["sha256:b"]
    usage.close()


def test_a_table_written_through_sqlalchemy_opens_unchanged(tmp_path: Path) -> None:
    """Stores from before the table moved to sqlite3 (declared through SQLAlchemy Core, as it
    was) keep their rows and take writes; new files get the same schema."""
    from sqlalchemy import Column, Float, MetaData, Table, Text, create_engine

    metadata = MetaData()
    table = Table(
        "image_usage",
        metadata,
        Column("digest", Text, primary_key=True),
        Column("pulled_at", Float),
        Column("last_used", Float),
    )
    old = tmp_path / "old" / "usage.db"
    old.parent.mkdir()
    engine = create_engine(f"sqlite:///{old}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert().values(digest="sha256:a", pulled_at=1.5, last_used=None))
    engine.dispose()

    usage = ImageUsage(old)
    usage.touch("sha256:a", 2.5)
    assert (usage.all()["sha256:a"].pulled_at, usage.all()["sha256:a"].last_used) == (1.5, 2.5)
    usage.close()
    fresh = tmp_path / "new" / "usage.db"
    ImageUsage(fresh).close()
    assert _schema(fresh) == _schema(old)


def test_a_file_that_is_not_a_database_is_an_image_error(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ImageError, match=r"cannot open the image usage table .*usage\.db"):
        ImageUsage(path)
