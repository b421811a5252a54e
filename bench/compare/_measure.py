"""What every form is measured by, one implementation for all: start-to-ready, idle memory of
the processes a form needs, and density under a memory budget.

A form hands back a :class:`Running` (its port, the processes it needs, how to stop it); the
loops here never know which form they drive, so every form is measured the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from _common import free_port, spread, wait_http  # the waits every benchmark shares

__all__ = [
    "BUDGET",
    "Form",
    "Running",
    "cpu_model",
    "density",
    "free_port",
    "memory",
    "nice_self",
    "process_tree",
    "spread",
    "start_runs",
    "wait_http",
]

#: The memory budget of the density figure.
BUDGET = 2 << 30


@dataclass
class Running:
    """One started instance of a form."""

    port: int
    #: Processes whose memory the form costs (descendants are added by :func:`process_tree`).
    pids: Callable[[], list[int]]
    stop: Callable[[], None]
    #: False once the instance has ended (so a failed start is not waited for to the deadline).
    alive: Callable[[], bool] | None = None

    def is_alive(self) -> bool:
        if self.alive is not None:
            return self.alive()
        return all(Path(f"/proc/{p}").exists() for p in self.pids())


class Form(Protocol):
    """One way of running the app. ``start`` returns once the form's launcher returned (not
    when the app is ready: the caller waits for that through the published port)."""

    key: str
    label: str

    def prepare(self) -> dict[str, object]: ...

    def start(self, port: int) -> Running: ...


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def process_tree(roots: list[int]) -> list[int]:
    """``roots`` and all their descendants."""
    tree = _children()
    out: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def memory(pids: list[int]) -> tuple[int, int]:
    """Summed (RSS, PSS) of ``pids`` and their descendants, from smaps_rollup."""
    rss = pss = 0
    for pid in process_tree(pids):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
    return rss, pss


@contextlib.contextmanager
def _stopping(running: list[Running]) -> Iterator[None]:
    try:
        yield
    finally:
        for r in reversed(running):
            with contextlib.suppress(Exception):
                r.stop()


def _start_ready(form: Form, deadline_s: float) -> tuple[Running, float]:
    port = free_port()
    began = time.perf_counter()
    r = form.start(port)
    try:
        wait_http(f"http://127.0.0.1:{port}/stats", deadline_s, r.is_alive)
    except BaseException:
        r.stop()
        raise
    return r, time.perf_counter() - began


def start_runs(
    form: Form, runs: int, *, settle: float, deadline_s: float, say: Callable[[str], None]
) -> dict[str, object]:
    """``runs`` sampled starts (after one unsampled warm-up): start-to-ready of each, and the
    idle memory of each once it has sat ``settle`` seconds without a request."""
    ready: list[float] = []
    rss: list[float] = []
    pss: list[float] = []
    for i in range(runs + 1):
        r, elapsed = _start_ready(form, deadline_s)
        with _stopping([r]):
            time.sleep(settle)
            m_rss, m_pss = memory(r.pids())
        if i == 0:
            say(f"  {form.key}: warm-up start {elapsed:.3f} s")
            continue
        ready.append(elapsed)
        rss.append(float(m_rss))
        pss.append(float(m_pss))
        say(f"  {form.key}: run {i}/{runs} ready in {elapsed:.3f} s, idle RSS {m_rss >> 20} MiB")
    return {
        "ready_s": spread(ready),
        "idle_rss": spread(rss),
        "idle_pss": spread(pss),
        "samples": {"ready_s": ready, "idle_rss": rss, "idle_pss": pss},
    }


def density(
    form: Form, cap: int, *, settle: float, deadline_s: float, say: Callable[[str], None]
) -> dict[str, object]:
    """Start idle instances one after another until their summed PSS reaches :data:`BUDGET`
    or ``cap`` run; PSS, because N instances share their binaries' pages (RSS would count
    them N times)."""
    running: list[Running] = []
    fit = 0
    used = 0
    stopped_by = f"cap of {cap}"
    avail_before = _mem_available()
    with _stopping(running):
        while len(running) < cap:
            r, _ = _start_ready(form, deadline_s)
            running.append(r)
            time.sleep(settle)
            used = sum(memory(x.pids())[1] for x in running)
            say(f"  {form.key}: {len(running)} idle instances, PSS sum {used >> 20} MiB")
            if used <= BUDGET:
                fit = len(running)
            else:
                stopped_by = "budget"
                break
        avail_drop = avail_before - _mem_available()
    per = used / max(len(running), 1)
    return {
        "started": len(running),
        "fit_measured": fit,
        "stopped_by": stopped_by,
        "pss_sum": used,
        "pss_per_instance": per,
        "mem_available_drop": avail_drop,
        # Capped: what the measured per-instance cost projects for the whole budget.
        "fit_projected": int(BUDGET // per) if per else None,
    }


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def nice_self(level: int = 10) -> None:
    """The machine is shared: everything the bench starts inherits this niceness."""
    with contextlib.suppress(OSError):
        os.nice(level)
