"""The results spool: numbering, partial and invalid lines, offsets across restarts, cursors."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ukedge.errors import UsageError
from ukedge.host import MAX_LINE_BYTES, ResultSpool, SpoolError
from ukedge.host._spool import Backlog


@pytest.fixture
def spool(tmp_path: Path) -> ResultSpool:
    s = ResultSpool(tmp_path / "spool.db", keep=2)
    s.add_sink("a")
    s.add_sink("b")
    return s


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def lines_of(spool: ResultSpool, instance: str) -> list[tuple[int, str, str | None]]:
    return [(r.seq, r.line, r.error) for r in spool.records(instance, limit=1_000_000)]


def test_numbers_complete_lines_per_instance_from_one(spool: ResultSpool, tmp_path: Path) -> None:
    f1, f2 = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    append(f1, b'{"n": 1}\n{"n": 2}\n')
    append(f2, b'{"m": 1}\n')
    assert spool.ingest_file("i1", "node-1", f1) == 2
    assert spool.ingest_file("i2", "node-1", f2) == 1
    append(f1, b'{"n": 3}\n')
    assert spool.ingest_file("i1", "node-1", f1) == 1
    assert spool.ingest_file("i1", "node-1", f1) == 0
    assert lines_of(spool, "i1") == [
        (1, '{"n": 1}', None),
        (2, '{"n": 2}', None),
        (3, '{"n": 3}', None),
    ]
    assert lines_of(spool, "i2") == [(1, '{"m": 1}', None)]
    assert spool.last_seq("i1") == 3
    assert spool.offset("i1") == f1.stat().st_size
    record = spool.records("i1")[0]
    assert record.node == "node-1"
    assert abs(record.ts - time.time()) < 60


def test_a_partial_last_line_waits_for_its_newline(spool: ResultSpool, tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    append(f, b'{"a": 1}\n{"b": [1, 2')
    assert spool.ingest_file("i", "n", f) == 1
    assert spool.offset("i") == len(b'{"a": 1}\n')
    assert spool.ingest_file("i", "n", f) == 0
    append(f, b", 3]}\n")
    assert spool.ingest_file("i", "n", f) == 1
    assert lines_of(spool, "i") == [(1, '{"a": 1}', None), (2, '{"b": [1, 2, 3]}', None)]


def test_invalid_lines_are_kept_as_error_records(spool: ResultSpool, tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    append(f, b'{"ok": 1}\nnot json at all\n\n   \n{"ok": 2}\r\n\xff\xfe{}\n"just a string"\n')
    assert spool.ingest_file("i", "n", f) == 5
    got = lines_of(spool, "i")
    assert [seq for seq, _, _ in got] == [1, 2, 3, 4, 5]
    assert got[0] == (1, '{"ok": 1}', None)
    assert got[1][1] == "not json at all"
    assert got[1][2] is not None and got[1][2].startswith("invalid JSON")
    assert got[2] == (3, '{"ok": 2}', None)
    assert got[3][1] == "\ufffd\ufffd{}"
    assert got[3][2] is not None and got[3][2].startswith("not UTF-8")
    assert got[4] == (5, '"just a string"', None)
    # the envelope of an error record carries the raw text, and is itself valid JSON
    envelope = json.loads(spool.records("i")[1].envelope())
    assert envelope["raw"] == "not json at all" and "result" not in envelope


def test_an_endless_line_is_stored_in_pieces_not_buffered(
    spool: ResultSpool, tmp_path: Path
) -> None:
    f = tmp_path / "r.jsonl"
    append(f, b"x" * (MAX_LINE_BYTES + 10))
    assert spool.ingest_file("i", "n", f) == 1
    [(seq, text, error)] = lines_of(spool, "i")
    assert (seq, len(text)) == (1, MAX_LINE_BYTES)
    assert error is not None and "longer than" in error
    append(f, b'yyy\n{"after": true}\n')
    assert spool.ingest_file("i", "n", f) == 2
    got = lines_of(spool, "i")
    assert got[1][1] == "x" * 10 + "yyy" and got[1][2] is not None
    assert got[2] == (3, '{"after": true}', None)


def test_offset_and_numbering_survive_a_new_spool_object(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    db = tmp_path / "spool.db"
    append(f, b'{"n": 1}\n{"n": 2}\n{"n": 3')
    first = ResultSpool(db)
    assert first.ingest_file("i", "n", f) == 2
    first.close()
    append(f, b"}\n")
    second = ResultSpool(db)
    assert second.ingest_file("i", "n", f) == 1
    assert [s for s, _, _ in lines_of(second, "i")] == [1, 2, 3]
    assert lines_of(second, "i")[2][1] == '{"n": 3}'


def test_ingest_from_the_wrong_offset_stores_nothing(spool: ResultSpool) -> None:
    assert spool.ingest("i", "n", b'{"a": 1}\n', at=0) == 1
    with pytest.raises(SpoolError, match="read again from offset"):
        spool.ingest("i", "n", b'{"a": 1}\n', at=0)
    assert spool.last_seq("i") == 1


def test_offset_and_records_commit_together(spool: ResultSpool, tmp_path: Path) -> None:
    """A failed insert leaves the offset where it was: nothing is skipped or numbered twice."""
    spool.ingest("i", "n", b'{"a": 1}\n', at=0)
    # Plant a row where the spool will number the third line; the batch insert then fails.
    with sqlite3.connect(spool.path) as db:
        db.execute("INSERT INTO records VALUES ('i', 3, 0.0, 'planted', NULL)")
    with pytest.raises(SpoolError):
        spool.ingest("i", "n", b'{"b": 2}\n{"c": 3}\n', at=len(b'{"a": 1}\n'))
    assert spool.offset("i") == len(b'{"a": 1}\n')
    assert spool.last_seq("i") == 1
    assert [line for _, line, _ in lines_of(spool, "i")] == ['{"a": 1}', "planted"]


def test_bad_node_names_are_refused(spool: ResultSpool) -> None:
    with pytest.raises(UsageError, match="node name"):
        spool.ingest("i", "a/b", b"{}\n", at=0)


def test_a_missing_file_adds_nothing_and_a_shrunk_file_is_read_anew(
    spool: ResultSpool, tmp_path: Path
) -> None:
    f = tmp_path / "r.jsonl"
    assert spool.ingest_file("i", "n", f) == 0
    append(f, b'{"a": 1}\n{"a": 2}\n')
    assert spool.ingest_file("i", "n", f) == 2
    f.write_bytes(b'{"new": 1}\n')
    assert spool.ingest_file("i", "n", f) == 1
    assert lines_of(spool, "i")[-1] == (3, '{"new": 1}', None)


def test_each_sink_has_its_own_cursor(spool: ResultSpool, tmp_path: Path) -> None:
    for i in range(1, 6):
        spool.ingest("x", "n", f'{{"i": {i}}}\n'.encode(), at=spool.offset("x"))
    spool.ingest("y", "n", b"{}\n", at=0)
    assert [(r.instance_id, r.seq) for r in spool.pending("a", 10)] == [
        ("x", 1),
        ("x", 2),
        ("x", 3),
        ("x", 4),
        ("x", 5),
        ("y", 1),
    ]
    spool.ack("a", "x", 3)
    assert [(r.instance_id, r.seq) for r in spool.pending("a", 10)] == [
        ("x", 4),
        ("x", 5),
        ("y", 1),
    ]
    assert len(spool.pending("b", 10)) == 6  # b is not held back, nor moved, by a
    spool.ack("a", "x", 2)  # a late, smaller ack does not move the cursor back
    assert spool.acked("a", "x") == 3
    assert [r.seq for r in spool.pending("b", 2)] == [1, 2, 1]  # the limit is per instance


def test_backlog_counts_each_sinks_undelivered_records_and_dates_the_oldest(
    spool: ResultSpool,
) -> None:
    assert spool.backlog() == {"a": Backlog(0, None), "b": Backlog(0, None)}
    spool.ingest("x", "n", b"{}\n{}\n{}\n", at=0)
    time.sleep(0.01)  # the two instances' records get different read times
    spool.ingest("y", "n", b"{}\n", at=0)
    ts = {(r.instance_id, r.seq): r.ts for r in spool.pending("a", 10)}
    assert ts[("x", 1)] < ts[("y", 1)]
    assert spool.backlog() == {"a": Backlog(4, ts[("x", 1)]), "b": Backlog(4, ts[("x", 1)])}
    spool.ack("a", "x", 3)
    spool.ack("b", "x", 1)
    assert spool.backlog() == {"a": Backlog(1, ts[("y", 1)]), "b": Backlog(3, ts[("x", 2)])}
    spool.ack("a", "y", 1)
    spool.prune()  # keeps what b still waits for
    assert spool.backlog()["a"] == Backlog(0, None)
    assert spool.backlog()["b"] == Backlog(3, ts[("x", 2)])


def test_acks_are_checked(spool: ResultSpool) -> None:
    spool.ingest("x", "n", b"{}\n{}\n", at=0)
    with pytest.raises(SpoolError, match="only numbered up to 2"):
        spool.ack("a", "x", 3)
    with pytest.raises(SpoolError, match="unknown sink"):
        spool.ack("nope", "x", 1)
    with pytest.raises(SpoolError, match="unknown sink"):
        spool.pending("nope")
    with pytest.raises(SpoolError, match="only numbered up to 0"):
        spool.ack("a", "unknown-instance", 1)


def test_prune_waits_for_the_slowest_sink_and_keeps_a_tail(spool: ResultSpool) -> None:
    spool.ingest("x", "n", b"{}\n" * 10, at=0)
    spool.ack("a", "x", 10)
    spool.ack("b", "x", 4)
    assert spool.prune() == 4  # b has 1..4; a has all
    assert [r.seq for r in spool.records("x")] == list(range(5, 11))
    spool.ack("b", "x", 10)
    assert spool.prune() == 4  # keep=2: the last two stay for reading
    assert [r.seq for r in spool.records("x")] == [9, 10]
    assert spool.pending("a") == [] and spool.pending("b") == []
    # numbering goes on after pruning
    spool.ingest("x", "n", b"{}\n", at=spool.offset("x"))
    assert [r.seq for r in spool.pending("a")] == [11]


def test_remove_sink_lets_records_go(spool: ResultSpool) -> None:
    spool.ingest("x", "n", b"{}\n" * 5, at=0)
    spool.ack("a", "x", 5)
    assert spool.prune() == 0  # b has acked nothing
    spool.remove_sink("b")
    assert spool.sinks() == ["a"]
    assert spool.prune() == 3


def test_forget_drops_an_instance(spool: ResultSpool) -> None:
    spool.ingest("x", "n", b"{}\n", at=0)
    spool.ack("a", "x", 1)
    spool.forget("x")
    assert spool.records("x") == [] and spool.pending("b") == [] and spool.offset("x") == 0


def test_concurrent_readers_never_number_a_line_twice(tmp_path: Path) -> None:
    """Two spool objects (two agent processes, say) tailing one file while it grows."""
    f = tmp_path / "r.jsonl"
    f.touch()
    db = tmp_path / "spool.db"
    spools = [ResultSpool(db), ResultSpool(db)]
    done = threading.Event()
    errors: list[BaseException] = []

    def tail(s: ResultSpool) -> None:
        try:
            while not done.is_set():
                s.ingest_file("i", "n", f)
            s.ingest_file("i", "n", f)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=tail, args=(s,)) for s in spools]
    for t in threads:
        t.start()
    for i in range(300):
        append(f, f'{{"i": {i}}}\n'.encode())
    done.set()
    for t in threads:
        t.join(60)
    assert not errors
    got = lines_of(spools[0], "i")
    assert [line for _, line, _ in got] == [f'{{"i": {i}}}' for i in range(300)]
    assert [seq for seq, _, _ in got] == list(range(1, 301))


def test_kill_9_mid_ingest_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """A process ingesting a big file is SIGKILLed; a new spool carries on exactly."""
    f = tmp_path / "r.jsonl"
    count = 60_000
    f.write_bytes(b"".join(f'{{"i": {i}, "pad": "{"p" * 40}"}}\n'.encode() for i in range(count)))
    db = tmp_path / "spool.db"
    ResultSpool(db).close()
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import ukedge.host._spool as s
        s._READ_CHUNK = 64 << 10  # many small transactions, so the kill lands between some
        spool = s.ResultSpool(Path({str(db)!r}))
        print("ready", flush=True)
        spool.ingest_file("i", "n", Path({str(f)!r}))
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    probe = ResultSpool(db)
    deadline = time.monotonic() + 60
    while probe.offset("i") == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    partial = probe.last_seq("i")
    assert 0 < partial < count, "the kill should land mid-file"
    assert probe.ingest_file("i", "n", f) == count - partial
    got = probe.records("i", limit=count + 10)
    assert [r.seq for r in got] == list(range(1, count + 1))
    assert [json.loads(r.line)["i"] for r in got] == list(range(count))


def test_removed_instances_are_forgotten_once_every_sink_has_them(
    spool: ResultSpool, tmp_path: Path
) -> None:
    f1, f2 = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    append(f1, b"{}\n{}\n")
    append(f2, b"{}\n")
    spool.ingest_file("gone", "n", f1)
    spool.ingest_file("live", "n", f2)
    for sink in ("a", "b"):
        spool.ack(sink, "live", 1)
    spool.ack("a", "gone", 2)
    spool.ack("b", "gone", 1)
    assert spool.forget_delivered({"live"}) == [], "sink b still waits for record 2"
    spool.ack("b", "gone", 2)
    assert spool.forget_delivered({"live"}) == ["gone"]
    assert spool.records("gone") == [] and spool.last_seq("gone") == 0
    assert [r.seq for r in spool.records("live")] == [1], "a live instance keeps its records"
