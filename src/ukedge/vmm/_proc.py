"""Process plumbing for hypervisor processes: detached spawn, identity, exit wait, /proc stats.

Machines must outlive the process that starts them and be re-adoptable by another one, so a
machine is identified by (pid, start time in clock ticks since boot): a pid alone may have been
reused by an unrelated process since the state file was written.

A machine stays the child of the process that spawned it, and the kernel keeps a dead child as
a zombie until its parent waits for it. Whoever observes the end (another process through the
machine's directory, a ``kill -9`` from outside, nobody at all) is often not the parent, so every
spawned child gets a reaper thread that waits for it the moment it ends and keeps its wait
status for :func:`reap`. One thread per live machine, blocked in ``waitpid``, costs nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

    # Loaded by stats() alone: identity checks (``ukedge ps``) do without the backend's models.
    from ukedge.vmm.base import MachineStats

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_DEFAULT_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGPIPE,
)


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this package needs."""

    state: str
    utime_ticks: int
    stime_ticks: int
    starttime: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None when the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm is in parentheses and may itself contain spaces or ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return ProcStat(
        state=rest[0],
        utime_ticks=int(rest[14 - 3]),
        stime_ticks=int(rest[15 - 3]),
        starttime=int(rest[22 - 3]),
    )


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pids_naming(marker: str) -> list[int]:
    """Live processes (not this one) with ``marker`` inside one of their arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        pid = int(entry.name)
        st = read_stat(pid)
        if st is not None and st.state not in ("Z", "X") and any(marker in a for a in cmdline(pid)):
            found.append(pid)
    return found


def send_signal(pid: int, starttime: int, signum: int) -> None:
    """Signal the process through a pidfd, so a reused pid is never signalled."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if is_alive(pid, starttime):
            signal.pidfd_send_signal(fd, signum)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def kill_naming(marker: str, timeout: float) -> list[int]:
    """SIGKILL every process with ``marker`` inside one of its arguments and wait until each
    is gone; return their pids."""
    killed = []
    for pid in pids_naming(marker):
        st = read_stat(pid)
        if st is None:
            continue
        send_signal(pid, st.starttime, signal.SIGKILL)
        wait_gone(pid, st.starttime, timeout)
        killed.append(pid)
    return killed


def is_alive(pid: int, starttime: int) -> bool:
    """True while the process with this pid and start time exists and is not a zombie."""
    st = read_stat(pid)
    return st is not None and st.starttime == starttime and st.state not in ("Z", "X")


def same_process(pid: int, starttime: int, marker: str) -> bool:
    """True when ``pid`` is the process we started: same start time and ``marker`` in argv."""
    st = read_stat(pid)
    if st is None or st.starttime != starttime:
        return False
    args = cmdline(pid)
    # Right after a spawn the new program's arguments may not be mapped yet (the parent of a
    # vfork-style spawn resumes during exec): an empty command line means "ask again".
    for _ in range(500):  # up to ~1 s: an exec can be preempted for long on a loaded host
        if args or not is_alive(pid, starttime):
            break
        time.sleep(0.002)
        args = cmdline(pid)
    return any(marker in arg for arg in args)


_PR_SET_THP_DISABLE = 41
_PR_GET_THP_DISABLE = 42


@contextlib.contextmanager
def _thp_disabled(enabled: bool) -> Iterator[None]:
    """Children spawned inside get no transparent huge pages (the flag survives exec).

    QEMU asks for huge pages on guest RAM and the TCG code buffer; with THP a guest that
    touches a few KiB of a 2 MiB region costs the host the whole 2 MiB. The flag is set on
    this process only around the spawn, since there is no other way to hand it to a child.
    """
    if not enabled:
        yield
        return
    libc = _libc()
    previous = libc.prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0) if libc else -1
    if not libc or previous < 0 or libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        yield  # not Linux, or a kernel without the flag: nothing to do
        return
    try:
        yield
    finally:
        libc.prctl(_PR_SET_THP_DISABLE, previous, 0, 0, 0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    import ctypes  # only to spawn; identity checks (ps) do without it

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def spawn_detached(
    argv: list[str], log_path: Path, fd3: Path | None = None, *, no_thp: bool = False
) -> int:
    """Start ``argv`` in its own session with stdio on ``log_path``; return its pid.

    posix_spawn (vfork-based in glibc) keeps the start cheap even from a large Python process,
    and a new session keeps the child alive when the caller's terminal or process group goes.
    """
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ]
        if fd3 is not None:  # e.g. a snapshot for -incoming fd:3
            actions.append((os.POSIX_SPAWN_OPEN, 3, str(fd3), os.O_RDONLY, 0))
        with _thp_disabled(no_thp):
            pid = os.posix_spawn(
                argv[0],
                argv,
                dict(os.environ),
                file_actions=actions,
                setsid=True,
                # Signal mask and ignored signals survive exec: a caller that blocks or
                # ignores SIGTERM (a worker thread, a daemon) must not pass that on.
                setsigmask=(),
                setsigdef=_DEFAULT_SIGNALS,
            )
    finally:
        os.close(log_fd)
    _watch(pid)
    return pid


#: Wait statuses of children reaped in this process, for whoever asks after the reaping.
_reaped: dict[int, int] = {}
#: The reaper thread of each child still being waited for.
_reapers: dict[int, threading.Thread] = {}
_reaper_lock = threading.Lock()
#: How long :func:`reap` waits for a reaper thread to collect a child that has just ended.
_REAPER_JOIN_S = 2.0


def _watch(pid: int) -> None:
    thread = threading.Thread(
        target=_reap_when_ended, args=(pid,), name=f"ukedge-reap-{pid}", daemon=True
    )
    with _reaper_lock:
        _reapers[pid] = thread
    thread.start()


def _reap_when_ended(pid: int) -> None:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # collected elsewhere (a caller's own waitpid)
        status = None
    with _reaper_lock:
        if status is not None:
            _reaped[pid] = status
        _reapers.pop(pid, None)


def reap(pid: int) -> int | None:
    """The wait status of ``pid`` if it is our child and has ended, else None; call it once
    the process is seen dead. The status is handed out once.

    Only processes started by this process have a wait status to give; for re-adopted
    machines the guest's exit line is the only account of how they ended.
    """
    _collect(pid)
    with _reaper_lock:
        return _reaped.pop(pid, None)


def _collect(pid: int) -> None:
    """Make sure an ended child of ours is no zombie (its status kept for :func:`reap`)."""
    with _reaper_lock:
        thread = _reapers.get(pid)
    if thread is not None:
        thread.join(_REAPER_JOIN_S)  # it returns as soon as the child has ended
        return
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if done == pid:
        with _reaper_lock:
            _reaped[pid] = status


def wait_gone(pid: int, starttime: int, timeout: float | None) -> bool:
    """Wait until the process ends (or is a zombie); False when ``timeout`` passed first.

    Uses a pidfd, which works for processes that are not our children (re-adopted machines).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        # The pid might have been reused between the check and pidfd_open.
        if not is_alive(pid, starttime):
            _collect(pid)
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if poller.poll(None if left is None else int(left * 1000) + 1):
                _collect(pid)
                return True
            if deadline is not None and time.monotonic() >= deadline:
                if is_alive(pid, starttime):
                    return False
                _collect(pid)
                return True
    finally:
        os.close(fd)


def stats(pid: int) -> MachineStats | None:
    """RSS (VmRSS) and user+system CPU time of ``pid``; None when it is gone."""
    from ukedge.vmm.base import MachineStats

    st = read_stat(pid)
    if st is None:
        return None
    rss = 0
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    pss = None
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
    return MachineStats(
        rss_bytes=rss, cpu_seconds=(st.utime_ticks + st.stime_ticks) / _CLK_TCK, pss_bytes=pss
    )
