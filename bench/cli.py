#!/usr/bin/env python3
"""CLI benchmark (issue: a fast CLI): how long `ukedge` takes to answer.

It times, as separate processes, `ukedge --version`, `ukedge ps` (an empty node) and
`ukedge run --rm hello-c` (a VM that boots, prints and exits 3), and, in this process, the same
run through the instance manager `ukedge run` uses (start, wait for the exit, remove): that is
the VM's own cost, so `run` minus it is what the command adds. `python -c pass` is the baseline
measured in the same run, because this machine is shared and noisy and only same-run figures
compare; the samples are interleaved (one of each per round) so that a burst of load hits all
of them alike. Each command runs in a fresh UKEDGE_HOME, with the built kernel from the cache.

Usage: .venv/bin/python bench/cli.py [--runs 9] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common
from rich.console import Console
from rich.table import Table

from ukedge import paths

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
console = Console(width=max(100, shutil.get_terminal_size().columns))

RUN = "ukedge run --rm hello-c"
VM = "VM alone (manager)"
#: The issue's targets, in seconds: wall time of the command, or what `run` adds to the VM.
TARGETS = {"ukedge --version": 0.1, "ukedge ps": 0.2, "run overhead": 0.15}


def _ukedge() -> list[str]:
    """The installed `ukedge` script beside this interpreter (what a user runs), else -m."""
    script = Path(sys.executable).with_name("ukedge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ukedge.cli.main"]


#: CPU seconds (user + system) of each sampled child process, by measure: unlike wall time it
#: hardly moves when other work shares the machine.
CPU: dict[str, list[float]] = {}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], expect: int = 0, name: str | None = None) -> Callable[[], float]:
    def once() -> float:
        cpu = _children_cpu()
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True)
        elapsed = time.perf_counter() - began
        if name is not None:
            CPU.setdefault(name, []).append(_children_cpu() - cpu)
        if done.returncode != expect:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}, expected {expect}: "
                f"{done.stderr.decode(errors='replace')[-500:]}"
            )
        return elapsed

    return once


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9, help="sampled runs per measurement (>= 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    opts = parser.parse_args()
    if opts.runs < 5:
        parser.error("--runs must be at least 5")

    with tempfile.TemporaryDirectory(prefix="ukedge-bench-cli-") as tmp:
        os.environ["UKEDGE_CACHE"] = str(paths.cache_dir())  # the built kernel, not a rebuild
        os.environ["UKEDGE_HOME"] = str(Path(tmp) / "home")
        # Imported after UKEDGE_HOME is set: the manager below is the one `ukedge run` opens.
        from ukedge.build import build_image
        from ukedge.host import RunRequest, open_manager
        from ukedge.image import ImageStore
        from ukedge.vmm import probe_accelerator

        build_image(EXAMPLES / "hello-c", ["hello-c:bench"], store=ImageStore(paths.store_dir()))
        verdict = probe_accelerator()  # cached from here on, as for every later command
        manager = open_manager()

        def vm_once() -> float:
            began = time.perf_counter()
            instance = manager.run(RunRequest(image="hello-c:bench", env={"HELLO_EXIT": "3"}))
            final = manager.wait(instance.id, timeout=120)
            manager.remove(instance.id)
            elapsed = time.perf_counter() - began
            if final.exit_code != 3:
                raise RuntimeError(f"hello-c exited {final.exit_code}, expected 3: {final.error}")
            return elapsed

        ukedge = _ukedge()
        measures: dict[str, Callable[[], float]] = {
            "python -c pass": _timed([sys.executable, "-c", "pass"], name="python -c pass"),
            "ukedge --version": _timed([*ukedge, "--version"], name="ukedge --version"),
            "ukedge ps": _timed([*ukedge, "ps"], name="ukedge ps"),
            # No CPU figure: the command reaps its QEMU, whose CPU time would count as its own.
            RUN: _timed([*ukedge, "run", "--rm", "-e", "HELLO_EXIT=3", "hello-c:bench"], 3),
            VM: vm_once,
        }
        for once in measures.values():
            once()  # warm the page cache, unpacked layers and .pyc files
        CPU.clear()
        samples: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(opts.runs):
            for name, once in measures.items():
                samples[name].append(once())
        manager.close()

    run, vm = samples[RUN], samples[VM]
    figures = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores {platform.machine()}, Linux {platform.release()}",
        "load": os.getloadavg()[0],
        "accelerator": verdict.accel,
        "runs": opts.runs,
        "commands": {name: _common.spread(s) for name, s in samples.items()},
        "cpu": {name: _common.spread(s) for name, s in CPU.items()},
        # Paired by round: each round's run and VM-alone ran back to back.
        "run overhead": _common.spread([r - v for r, v in zip(run, vm, strict=True)]),
    }
    _print(figures)
    if opts.json:
        opts.json.write_text(json.dumps(figures, indent=2))
    return 0


def _print(f: dict[str, object]) -> None:
    console.print(
        f"[bold]ukedge CLI benchmark[/bold]  {f['date']}  {f['machine']}  "
        f"load: {f['load']:.1f}  accelerator: {f['accelerator']}  runs: {f['runs']}"
    )
    commands = f["commands"]
    assert isinstance(commands, dict)
    baseline = commands["python -c pass"]["median"]
    cpu = f["cpu"]
    assert isinstance(cpu, dict)
    table = Table(title="wall time (s), each a fresh process except the in-process VM")
    for col in ("measure", "min", "median", "max", "x pass", "CPU s", "target"):
        table.add_column(col)
    rows = [*commands.items(), ("run overhead", f["run overhead"])]
    for name, spread in rows:
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"<= {target} " + ("met" if spread["median"] <= target else "MISSED")
        table.add_row(
            name,
            f"{spread['min']:.3f}",
            f"{spread['median']:.3f}",
            f"{spread['max']:.3f}",
            f"{spread['median'] / baseline:.1f}x" if name != "run overhead" else "",
            f"{cpu[name]['median']:.3f}" if name in cpu else "",
            verdict,
        )
    console.print(table)
    console.print(
        "run overhead: `ukedge run --rm` minus the same VM started, waited for and removed "
        "through the instance manager in this process (per round, then the spread); CPU s: "
        "median user+system seconds of the command's process (steady when the machine is busy)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
