"""Instance labels: validated on the run request, kept in the instance record, and records
written before labels existed still load (with none)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from ukedge.errors import UsageError
from ukedge.host import Instance, InstanceManager, InstanceState, RunRequest, run_request
from ukedge.host.instances._state import InstanceRecords


@pytest.mark.parametrize(
    "labels",
    [
        {"ukedge.deployment": "web", "ukedge.replica": "r-1", "ukedge.revision": "3"},
        {"com.example.tier": "front-end", "a": ""},
        {f"k{i}": "v" for i in range(64)},
    ],
)
def test_valid_labels_are_kept(labels: dict[str, str]) -> None:
    assert run_request(image="app:1", labels=labels).labels == labels


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"Upper": "x"}, "invalid label key 'Upper'"),
        ({"a..b": "x"}, "invalid label key 'a..b'"),
        ({"-a": "x"}, "invalid label key '-a'"),
        ({"a b": "x"}, "invalid label key 'a b'"),
        ({"": "x"}, "invalid label key ''"),
        ({"k" * 129: "x"}, "at most 128 characters"),
        ({"k": "x" * 1025}, "invalid value of label k"),
        ({"k": "line\nbreak"}, "invalid value of label k"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64 labels"),
    ],
)
def test_bad_labels_are_refused_naming_the_label(labels: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match="labels") as caught:
        run_request(image="app:1", labels=labels)
    assert message in str(caught.value)


def _instance(**extra: object) -> Instance:
    return Instance(
        id="abc123",
        name="one",
        image="app:1",
        image_digest="sha256:" + "0" * 64,
        state=InstanceState.CREATED,
        created_at=time.time(),
        memory_mib=64,
        vcpus=1,
        workdir="/tmp/x",
        **extra,  # type: ignore[arg-type]
    )


def test_labels_persist_in_the_record(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    InstanceRecords(db).add(_instance(labels={"ukedge.deployment": "web"}))
    assert InstanceRecords(db).find("one").labels == {"ukedge.deployment": "web"}


def test_a_record_written_before_labels_existed_loads_with_none(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    records = InstanceRecords(db)
    records.add(_instance())
    records.close()
    # Rewrite the stored document as an older ukedge wrote it: no "labels" key at all.
    with sqlite3.connect(db) as conn:
        (doc,) = conn.execute("SELECT doc FROM instances WHERE id = 'abc123'").fetchone()
        old = json.loads(doc)
        del old["labels"]
        conn.execute("UPDATE instances SET doc = ? WHERE id = 'abc123'", (json.dumps(old),))
    conn.close()
    assert InstanceRecords(db).find("one").labels == {}


def test_create_records_the_requests_labels(manager: InstanceManager) -> None:
    labels = {"ukedge.deployment": "web", "ukedge.replica": "r1", "ukedge.revision": "2"}
    created = manager.create(RunRequest(image="hello-c:1", name="labelled", labels=labels))
    try:
        assert created.labels == labels
        assert manager.get("labelled").labels == labels
    finally:
        manager.remove(created.id, force=True)
