"""The node's event journal: what one process does, a follower in another sees (issue 16.3)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from ukedge.host import InstanceEvent, InstanceState
from ukedge.host._events import EventJournal


def _event(n: int) -> InstanceEvent:
    return InstanceEvent(
        time=time.time(), id=f"{n:032x}", name=f"i{n}", state=InstanceState.RUNNING, action="start"
    )


def _follow_in_thread(
    journal: EventJournal, count: int
) -> tuple[threading.Thread, list[InstanceEvent], threading.Event]:
    """A follower whose position is taken before this returns, as ``follow`` promises."""
    stop = threading.Event()
    found: list[InstanceEvent] = []
    iterator = journal.follow(stop)

    def run() -> None:
        for event in iterator:
            found.append(event)
            if len(found) == count:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, found, stop


def test_a_follower_sees_only_what_comes_after_it_in_order(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "events.jsonl")
    journal.append(_event(0))  # before the follower: not shown
    thread, found, stop = _follow_in_thread(journal, 3)
    for n in (1, 2, 3):
        journal.append(_event(n))
    thread.join(timeout=30)
    stop.set()
    assert [e.name for e in found] == ["i1", "i2", "i3"]


def test_a_follower_waits_for_a_journal_that_does_not_exist_yet(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "events.jsonl")
    thread, found, stop = _follow_in_thread(journal, 1)
    journal.append(_event(7))
    thread.join(timeout=30)
    stop.set()
    assert [e.name for e in found] == ["i7"]


def test_rotation_loses_nothing_and_keeps_one_older_file(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "events.jsonl", max_bytes=1000, poll_s=0.01)
    line_bytes = len(_event(0).model_dump_json()) + 1
    thread, found, stop = _follow_in_thread(journal, 40)
    for n in range(40):
        journal.append(_event(n))
        if n % 2:  # a follower that keeps up: wait until it has read what was written
            deadline = time.monotonic() + 30
            while len(found) <= n and time.monotonic() < deadline:
                time.sleep(0.01)
    thread.join(timeout=30)
    stop.set()
    assert [e.name for e in found] == [f"i{n}" for n in range(40)]
    assert 40 * line_bytes > 3 * 1000, "the journal turned over several times"
    assert (tmp_path / "events.jsonl.1").exists()
    assert (tmp_path / "events.jsonl").stat().st_size <= 1000
    assert (tmp_path / "events.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_follower_two_rotations_behind_reads_the_kept_older_file(tmp_path: Path) -> None:
    line_bytes = len(_event(0).model_dump_json()) + 1
    journal = EventJournal(tmp_path / "events.jsonl", max_bytes=4 * line_bytes, poll_s=0.01)
    journal.append(_event(0))
    stop = threading.Event()
    events = journal.follow(stop)  # positioned after i0
    for n in range(1, 11):  # i1-i3 fill the first file, i4-i7 the second, i8-i10 the third
        journal.append(_event(n))
    seen = [next(events).name for _ in range(10)]
    stop.set()
    assert seen == [f"i{n}" for n in range(1, 11)]


_WRITER = """
import sys, time
from pathlib import Path
from ukedge.host import InstanceEvent, InstanceState
from ukedge.host._events import EventJournal
journal = EventJournal(Path(sys.argv[1]))
for n in range(int(sys.argv[3])):
    journal.append(InstanceEvent(time=time.time(), id=sys.argv[2] * 32, name=f"{sys.argv[2]}{n}",
                                 state=InstanceState.RUNNING, action="start"))
"""


def test_writers_in_other_processes_never_interleave_and_are_all_seen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    journal = EventJournal(path, poll_s=0.01)
    thread, found, stop = _follow_in_thread(journal, 3 * 50)
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, "50"]) for tag in "abc"
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    thread.join(timeout=60)
    stop.set()
    assert len(found) == 150, "every event of every writer"
    for tag in "abc":
        mine = [e.name for e in found if e.name.startswith(tag)]
        assert mine == [f"{tag}{n}" for n in range(50)], "each writer's events in its order"
