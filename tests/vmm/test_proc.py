"""Process plumbing: detached spawn (own session, clean signals), identity, exit wait, stats."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ukedge.vmm import _proc


@pytest.fixture
def term_ignored() -> Iterator[None]:
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    signal.signal(signal.SIGTERM, old)


def test_spawned_process_has_its_own_session_and_default_signals(
    tmp_path: Path, term_ignored: None
) -> None:
    log = tmp_path / "out.log"
    script = "grep -E '^(SigIgn|SigBlk)' /proc/self/status; ps -o sid= -p $$; echo done"
    pid = _proc.spawn_detached(["/bin/sh", "-c", script], log)
    st = _proc.read_stat(pid)  # None: it has ended and been collected already
    assert st is None or _proc.wait_gone(pid, st.starttime, 10)
    out = log.read_text()
    assert "done" in out
    fields = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    sigterm_bit = 1 << (signal.SIGTERM - 1)
    sigusr1_bit = 1 << (signal.SIGUSR1 - 1)
    assert int(fields["SigIgn"], 16) & sigterm_bit == 0
    assert int(fields["SigBlk"], 16) & sigusr1_bit == 0
    assert int(out.split()[-2]) == pid  # a session of its own: its sid is its pid


def test_wait_gone_times_out_on_a_live_process(tmp_path: Path) -> None:
    pid = _proc.spawn_detached(["/bin/sleep", "3600"], tmp_path / "log")
    st = _proc.read_stat(pid)
    assert st is not None
    try:
        started = time.monotonic()
        assert not _proc.wait_gone(pid, st.starttime, 0.2)
        # A ceiling, not a speed limit: far above 0.2 s, far below the process's hour.
        assert time.monotonic() - started < 120
        assert _proc.is_alive(pid, st.starttime)
        assert not _proc.is_alive(pid, st.starttime + 1)  # another start time: another process
        stats = _proc.stats(pid)
        assert stats is not None
        assert stats.rss_bytes > 0
    finally:
        os.kill(pid, signal.SIGKILL)
    assert _proc.wait_gone(pid, st.starttime, 10)
    assert not _proc.is_alive(pid, st.starttime)
    assert _proc.read_stat(pid) is None  # reaped by wait_gone


def test_read_stat_handles_odd_process_names(tmp_path: Path) -> None:
    odd = tmp_path / "a b) c"
    odd.symlink_to("/bin/sleep")
    pid = _proc.spawn_detached([str(odd), "30"], tmp_path / "log")
    try:
        st = _proc.read_stat(pid)
        assert st is not None
        assert st.state in "RSD"
        assert _proc.same_process(pid, st.starttime, "30")
        assert not _proc.same_process(pid, st.starttime, "qmp.sock")
    finally:
        os.kill(pid, signal.SIGKILL)
        _proc.wait_gone(pid, st.starttime, 10)


def test_no_thp_reaches_the_child_and_not_the_caller(tmp_path: Path) -> None:
    def thp_line(text: str) -> str:
        return next((ln for ln in text.splitlines() if ln.startswith("THP_enabled")), "")

    if not thp_line(Path("/proc/self/status").read_text()):
        pytest.skip("kernel does not report THP_enabled")
    for no_thp, expected in ((True, "0"), (False, "1")):
        log = tmp_path / f"{no_thp}.log"
        argv = ["/bin/grep", "THP_enabled", "/proc/self/status"]
        pid = _proc.spawn_detached(argv, log, no_thp=no_thp)
        st = _proc.read_stat(pid)  # None: it has ended and been collected already
        assert st is None or _proc.wait_gone(pid, st.starttime, 10)
        assert thp_line(log.read_text()).split() == ["THP_enabled:", expected]
        assert thp_line(Path("/proc/self/status").read_text()).split()[1] == "1"


def _wait_not_zombie(pid: int, timeout: float = 30.0) -> _proc.ProcStat | None:
    """Poll until ``pid`` is no zombie (collected) or ``timeout`` passes; the last stat."""
    deadline = time.monotonic() + timeout
    st = _proc.read_stat(pid)
    while st is not None and time.monotonic() < deadline:
        time.sleep(0.02)
        st = _proc.read_stat(pid)
    return st


def test_a_child_killed_from_outside_leaves_no_zombie(tmp_path: Path) -> None:
    """Nobody here waits for the child (as when another process or the OOM killer ends a
    machine); it is collected all the same, and its wait status is kept for reap()."""
    pid = _proc.spawn_detached(["/bin/sleep", "30"], tmp_path / "log")
    os.kill(pid, signal.SIGKILL)
    st = _wait_not_zombie(pid)
    assert st is None, f"pid {pid} left as {st}"
    status = _proc.reap(pid)
    assert status is not None and os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    assert _proc.reap(pid) is None  # handed out once


def test_a_child_that_exits_by_itself_leaves_no_zombie(tmp_path: Path) -> None:
    pid = _proc.spawn_detached(["/bin/sh", "-c", "exit 3"], tmp_path / "log")
    assert _wait_not_zombie(pid) is None
    status = _proc.reap(pid)
    assert status is not None and os.WEXITSTATUS(status) == 3
