"""Machine logic against a fake QMP peer: QMP sessions, error mapping, re-adoption checks and
the stop fallback. Real QEMU behaviour is tested in test_qemu.py and the conformance suite."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit import program
from ukedge import vmm
from ukedge.errors import MachineError, StateError
from ukedge.vmm import MachineSpec, MachineState, _proc, _qmp

FAKE = program("fake_qmp.py")


def _record(workdir: Path, pid: int, **extra: object) -> None:
    st = _proc.read_stat(pid)
    assert st is not None
    spec = MachineSpec("fake", kernel=workdir / "k", workdir=workdir)
    record = {
        "version": 1,
        "backend": "qemu",
        "pid": pid,
        "starttime": st.starttime,
        "argv": [],
        "spec": spec.to_json(),
        "final": None,
        **extra,
    }
    (workdir / "machine.json").write_text(json.dumps(record))


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    proc = subprocess.Popen([sys.executable, str(FAKE), str(workdir / "qmp.sock")])
    deadline = time.monotonic() + 30
    while not (workdir / "qmp.sock").exists():
        assert time.monotonic() < deadline, "fake QMP peer did not start"
        time.sleep(0.02)
    _record(workdir, proc.pid)
    yield proc
    proc.kill()
    proc.wait()


def test_execute_returns_results_in_order(
    tmp_path: Path, fake_qemu: subprocess.Popen[bytes]
) -> None:
    results = _qmp.execute(
        tmp_path / "wd/qmp.sock", [("query-status", None), ("query-chardev", None)]
    )
    assert results[0] == {"status": "running", "running": True}
    assert isinstance(results[1], list)


def test_error_reply_becomes_machine_error(
    tmp_path: Path, fake_qemu: subprocess.Popen[bytes]
) -> None:
    with pytest.raises(MachineError, match="QEMU refused query-bogus") as info:
        _qmp.execute(tmp_path / "wd/qmp.sock", [("query-bogus", None)], machine_id="fake")
    assert info.value.machine_id == "fake"
    assert info.value.__cause__ is not None


def test_missing_socket_becomes_machine_error(tmp_path: Path) -> None:
    with pytest.raises(MachineError, match=r"is it still running|cannot reach") as info:
        _qmp.execute(tmp_path / "nope.sock", [("query-status", None)])
    assert info.value.__cause__ is not None


def test_execute_works_inside_a_running_event_loop(
    tmp_path: Path, fake_qemu: subprocess.Popen[bytes]
) -> None:
    async def inside() -> list[object]:
        return _qmp.execute(tmp_path / "wd/qmp.sock", [("query-status", None)])

    assert asyncio.run(inside())[0] == {"status": "running", "running": True}


def test_attach_adopts_and_stop_falls_back_to_powerdown(
    tmp_path: Path, fake_qemu: subprocess.Popen[bytes]
) -> None:
    machine = vmm.create("qemu", {"accel": "tcg"}).attach(tmp_path / "wd")
    assert machine.state is MachineState.RUNNING
    assert machine.pid == fake_qemu.pid
    assert machine.qmp("query-status") == {"status": "running", "running": True}  # type: ignore[attr-defined]
    # The fake's control chardev is not frontend-open, so stop() must press the power button;
    # the fake then "powers off" reporting status 143.
    assert machine.stop(timeout=10) == 143
    status = machine.status()
    assert (status.state, status.exit_code) == (MachineState.EXITED, 143)
    with pytest.raises(StateError, match="has exited"):
        machine.kill()
    with pytest.raises(StateError):
        machine.stats()
    # The final status is recorded for later readers.
    again = vmm.create("qemu", {"accel": "tcg"}).attach(tmp_path / "wd")
    assert again.status().exit_code == 143


def test_attach_never_adopts_a_reused_pid(tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    other = subprocess.Popen(["sleep", "30"])
    try:
        # Same pid and start time, but not this machine's command line.
        _record(workdir, other.pid)
        machine = vmm.create("qemu", {"accel": "tcg"}).attach(workdir)
        assert machine.state is MachineState.FAILED
        assert "not adopted" in machine.status().detail
        with pytest.raises(StateError):
            machine.kill()
        # Right pid, wrong start time: the pid was reused.
        _record(workdir, other.pid)
        data = json.loads((workdir / "machine.json").read_text())
        data["starttime"] -= 1
        (workdir / "machine.json").write_text(json.dumps(data))
        machine = vmm.create("qemu", {"accel": "tcg"}).attach(workdir)
        assert machine.state.final
        with pytest.raises(StateError):
            machine.kill()
        assert other.poll() is None, "attach/kill signalled a process that is not the machine"
    finally:
        other.kill()
        other.wait()


def test_attach_without_state_is_machine_error(tmp_path: Path) -> None:
    with pytest.raises(MachineError, match="holds no machine"):
        vmm.create("qemu").attach(tmp_path)


def test_dead_pid_without_exit_line_is_failed(tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    proc = subprocess.Popen(["true"])
    st = _proc.read_stat(proc.pid)
    assert st is not None
    _record(workdir, proc.pid)
    proc.wait()
    machine = vmm.create("qemu").attach(workdir)
    assert machine.state is MachineState.FAILED
    with pytest.raises(MachineError, match="failed"):
        machine.wait(0)
    assert (workdir / "machine.json").exists()


def test_kill_strays_kills_only_what_names_the_machine_socket(tmp_path: Path) -> None:
    """A QEMU spawned but never recorded (its starter was killed in between) is found by its
    private QMP socket path; an unrelated process, even one reading the directory, is not."""
    from ukedge.vmm import MachinePaths

    workdir = tmp_path / "vm"
    workdir.mkdir()
    qmp = MachinePaths(workdir.resolve()).qmp
    stray = _proc.spawn_detached(["/bin/sh", "-c", "sleep 300", str(qmp)], tmp_path / "a.log")
    reader = _proc.spawn_detached(
        ["/bin/sh", "-c", "sleep 300", str(workdir / "console.log")], tmp_path / "b.log"
    )
    reader_stat = _proc.read_stat(reader)
    assert reader_stat is not None
    try:
        deadline = time.monotonic() + 10
        while str(qmp) not in _proc.cmdline(stray) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert vmm.create("qemu").kill_strays(workdir) == [stray]
        assert _proc.read_stat(stray) is None
        assert _proc.is_alive(reader, reader_stat.starttime)
    finally:
        os.kill(reader, 9)
