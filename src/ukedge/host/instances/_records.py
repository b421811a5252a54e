"""The instance records' SQLite file as stored: one JSON document per instance.

:class:`~ukedge.host.instances._state.InstanceRecords` validates and changes these documents;
``ukedge ps`` reads them through :func:`instance_docs` alone, without the models (one reader for
both). The file's crash and concurrency story is ``_state``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ukedge.sqlite import SQLiteFile

__all__ = ["RECORDS_FILE", "RECORD_FIELDS", "RecordFile", "instance_docs", "listed_instances"]

#: The records' file in the instance manager's root directory.
RECORDS_FILE = "state.db"

#: The fields of a record as this version writes it (``Instance.model_dump_json``), in order; a
#: test holds it equal to the model's. A record with others was written by another version and
#: is read through the model, which fills what it lacks.
RECORD_FIELDS = (
    "id",
    "name",
    "image",
    "image_digest",
    "state",
    "exit_code",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "pid",
    "memory_mib",
    "vcpus",
    "ports",
    "env",
    "args",
    "workdir",
    "restored",
    "restart",
    "restart_count",
    "health",
    "on_demand",
    "idle_timeout_s",
    "hostname",
    "cold",
    "auto_remove",
    "stopped_by_user",
    "upstream_ports",
    "health_failures",
    "healthy_at",
    "restart_at",
    "restart_delay_s",
    "runs",
    "labels",
)

_T = TypeVar("_T")

#: The table as SQLAlchemy created it before the store moved to :mod:`sqlite3` (same text, so
#: files from either open alike; ``tests/host/test_state.py`` holds the two together).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS instances (\n\tid VARCHAR(64) NOT NULL, \n"
    "\tname VARCHAR(64) NOT NULL, \n\tdoc TEXT NOT NULL, \n\tPRIMARY KEY (id)\n)",
    "CREATE UNIQUE INDEX IF NOT EXISTS ix_instances_name ON instances (name)",
)


class RecordFile:
    """The records' file, opened (and created) as the manager opens it."""

    def __init__(self, path: Path) -> None:
        # synchronous=FULL: a record written is there after a power cut too (it names a VM).
        # Every change is BEGIN IMMEDIATE (ukedge.sqlite): read-modify-write sequences from
        # several processes serialise instead of failing at commit. Plain reads are snapshots.
        self._db = SQLiteFile(path, what="instance records", synchronous="FULL")
        self._db.create(_SCHEMA)

    def docs(self) -> list[str]:
        """Every record's JSON text, in one snapshot."""
        with self._db.read() as db:
            return [doc for (doc,) in db.execute("SELECT doc FROM instances").fetchall()]

    def close(self) -> None:
        self._db.close()


def instance_docs(root: Path) -> list[dict[str, Any]] | None:
    """The records under an instance manager's ``root`` as stored (not reconciled: see
    :func:`~ukedge.host.instances.record_settled`); None when one was written by another
    version (see :data:`RECORD_FIELDS`)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    records = RecordFile(root / RECORDS_FILE)
    try:
        docs = [json.loads(doc) for doc in records.docs()]
    finally:
        records.close()
    if any(not isinstance(doc, dict) or tuple(doc) != RECORD_FIELDS for doc in docs):
        return None
    return docs


def listed_instances(
    records: list[_T],
    *,
    all_instances: bool,
    active: Callable[[_T], bool],
    created: Callable[[_T], float],
) -> list[_T]:
    """What ``ps`` lists, models or documents alike: the active ones unless ``all_instances``,
    newest first."""
    if not all_instances:
        records = [r for r in records if active(r)]
    return sorted(records, key=created, reverse=True)
