"""When a record needs no reconciling (``record_settled``): the one test the manager and
``ukedge ps``'s model-free path share, here against real processes and machine records."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ukedge.host import record_settled
from ukedge.host.instances._console import machine_paths
from ukedge.vmm import MachinePaths
from ukedge.vmm._proc import read_stat


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "instance"


def _record(paths: MachinePaths, pid: int, **extra: object) -> None:
    st = read_stat(pid)
    assert st is not None
    paths.workdir.mkdir(parents=True, exist_ok=True)
    record = {"version": 1, "backend": "qemu", "pid": pid, "starttime": st.starttime, **extra}
    paths.state.write_text(json.dumps(record))


@pytest.fixture
def machine(workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process standing for the machine's QEMU: its command line names the QMP socket."""
    qmp = str(machine_paths(workdir).qmp)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", qmp])
    yield proc
    proc.kill()
    proc.wait()


def test_ended_records_are_settled(workdir: Path) -> None:
    for state in ("exited", "failed", "created"):
        assert record_settled(state, None, workdir)


def test_a_running_record_is_settled_while_its_machine_runs_as_recorded(
    workdir: Path, machine: subprocess.Popen[bytes]
) -> None:
    paths = machine_paths(workdir)
    _record(paths, machine.pid)
    assert record_settled("running", machine.pid, workdir)
    assert record_settled("starting", machine.pid, workdir)
    # What only the manager finishes: a stop whose stopper may have died, a start not recorded.
    assert not record_settled("stopping", machine.pid, workdir)
    assert not record_settled("running", None, workdir)
    # The record names another run, or says how the machine ended: look closer.
    assert not record_settled("running", machine.pid + 1, workdir)
    _record(paths, machine.pid, final={"state": "exited", "exit_code": 0})
    assert not record_settled("running", machine.pid, workdir)


def test_a_dead_or_foreign_process_is_not_settled(workdir: Path) -> None:
    paths = machine_paths(workdir)
    assert not record_settled("running", 1, workdir)  # no machine record at all
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _record(paths, other.pid)  # alive, but its command line is not this machine's QEMU
        assert not record_settled("running", other.pid, workdir)
    finally:
        other.kill()
        other.wait()
    assert not record_settled("running", other.pid, workdir)  # and now gone
