"""The QEMU backend against the shared conformance suite, plus QEMU-specific checks."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from conformance import vmm as conformance
from kit.net import free_port
from ukedge import vmm
from ukedge.vmm import MachineBackend

CONFIG: dict[str, object] = {}


@pytest.fixture(scope="module")
def backend() -> MachineBackend:
    return vmm.create("qemu", CONFIG)


@pytest.fixture
def starter() -> list[str]:
    return conformance.starter_command("qemu", CONFIG)


class TestQemuConformance(conformance.MachineBackendSuite):
    """Runs every check of tests/conformance/vmm.py against the QEMU backend."""


BOOT_TIMEOUT = conformance.BOOT_TIMEOUT


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return conformance._build_guest(tmp_path_factory.mktemp("qemu-guest"))


def _digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@pytest.mark.vm
@pytest.mark.parametrize(
    ("template", "options", "ram"),
    [
        (False, {}, False),  # a plain machine: the RAM goes into the stream
        (True, {}, True),  # a template: devices in the stream, the RAM file shared by clones
        (True, {"template_snapshots": False}, False),  # the older path, chosen by option
    ],
    ids=["stream", "template", "template-off"],
)
def test_snapshot_restores_clones_with_their_own_ports(
    guest: Any, tmp_path: Path, template: bool, options: dict[str, object], ram: bool
) -> None:
    """A listening app is saved once and restored twice; each clone answers on its own port.
    A template's RAM file is the same after both clones ran (they map it privately). Clones
    start without an initramfs (nothing reads it after a restore)."""
    from ukedge.errors import UsageError
    from ukedge.ports import PortMapping
    from ukedge.vmm import MachineSpec, MachineState

    backend = vmm.create("qemu", {**CONFIG, **options})
    plain = guest.spec("snap-src", "echo", "7777")
    source = backend.start(MachineSpec.from_json({**plain.to_json(), "template": template}))
    try:
        conformance.wait_for(
            conformance.console_has(source, "conformance app listening"),
            BOOT_TIMEOUT,
            "the app",
        )
        source.snapshot(tmp_path / "snap")
    finally:
        source.kill()
    assert (tmp_path / "snap" / "vmstate").stat().st_size > 0
    template_ram = tmp_path / "snap" / "ram"
    assert template_ram.is_file() is ram
    before = _digest(template_ram) if ram else ""
    clones = []
    try:
        for n in range(2):
            port = free_port()
            base = guest.spec(
                f"clone{n}", "echo", "7777", ports=(PortMapping(host_port=port, guest_port=7777),)
            )
            spec = MachineSpec.from_json({**base.to_json(), "restore_from": str(tmp_path / "snap")})
            clone = backend.start(spec)
            clones.append(clone)
            deadline = time.monotonic() + BOOT_TIMEOUT
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                        conn.sendall(b"clone %d\n" % n)
                        conn.shutdown(socket.SHUT_WR)
                        assert conn.recv(64) == b"clone %d\n" % n
                    break
                except (ConnectionError, TimeoutError, AssertionError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            # The restored app never booted: nothing but what QEMU appended after the restore.
            assert "conformance app listening" not in clone.console_path.read_text()
            # ... so it gets no initramfs: none joined into its directory, none on its argv
            # (the source, booted from two archives, had its joined copy).
            assert "-initrd" not in clone.argv
            assert not (clone.workdir / "initrd.img").exists()
            assert (source.workdir / "initrd.img").is_file()
        for clone in clones:
            assert clone.stop(timeout=BOOT_TIMEOUT) == 143  # echo mode dies of SIGTERM
        if ram:
            assert _digest(template_ram) == before
        for clone in clones:
            assert clone.state is MachineState.EXITED
        bigger = MachineSpec.from_json({**spec.to_json(), "memory_mib": 128, "machine_id": "x"})
        with pytest.raises(UsageError, match="memory_mib"):
            backend.start(bigger)
    finally:
        for clone in clones:
            if not clone.state.final:
                clone.kill()


@pytest.mark.vm
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_run_as_drops_privileges_under_the_sandbox(guest: Any) -> None:
    machine = vmm.create("qemu", {"run_as": "nobody"}).start(guest.spec("runas", "wait"))
    try:
        conformance.wait_for(
            conformance.console_has(machine, "conformance app waiting"),
            BOOT_TIMEOUT,
            "the app",
        )
        uid_line = next(
            line
            for line in Path(f"/proc/{machine.pid}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        assert uid_line.split()[1:] == ["65534"] * 4
        assert machine.stop(timeout=BOOT_TIMEOUT) == 42
    finally:
        if not machine.state.final:
            machine.kill()


@pytest.mark.vm
def test_qemu_start_failure_is_reported(guest: Any) -> None:
    """QEMU refusing its configuration is start's error, with QEMU's own message."""
    from ukedge.errors import MachineError

    backend = vmm.create("qemu", {"extra_args": ("-device", "no-such-device")})
    with pytest.raises(MachineError, match="no-such-device"):
        backend.start(guest.spec("bad", "exit"))
    machine = backend.attach(guest.workroot / "bad")
    assert machine.status().state is vmm.MachineState.FAILED


@pytest.mark.vm
def test_without_confirm_start_failures_surface_on_wait(guest: Any) -> None:
    from ukedge.errors import MachineError

    backend = vmm.create(
        "qemu", {"confirm_start": False, "extra_args": ("-device", "no-such-device")}
    )
    machine = backend.start(guest.spec("bad-late", "exit"))
    with pytest.raises(MachineError, match="no-such-device"):
        machine.wait(BOOT_TIMEOUT)


@pytest.mark.vm
def test_machines_leave_no_zombie_children(backend: MachineBackend, guest: Any) -> None:
    """QEMU is this process's child: however a machine ends (stopped through another handle
    on its directory, or killed by someone else), it is collected, not left defunct."""
    import signal

    from ukedge.vmm import MachineState

    stopped = backend.start(guest.spec("reap-stop", "wait"))
    killed = backend.start(guest.spec("reap-kill", "wait"))
    try:
        for machine in (stopped, killed):
            conformance.wait_for(
                conformance.console_has(machine, "conformance app waiting"), BOOT_TIMEOUT, "app"
            )
        backend.attach(stopped.workdir).stop(timeout=BOOT_TIMEOUT)
        os.kill(killed.pid, signal.SIGKILL)
        for machine in (stopped, killed):
            conformance.wait_for(
                lambda m=machine: not Path(f"/proc/{m.pid}").exists(), 30, "no zombie"
            )
        status = killed.status()
        assert status.state is MachineState.FAILED
        assert "killed by SIGKILL" in (status.detail or "")
    finally:
        for machine in (stopped, killed):
            if not machine.state.final:
                machine.kill()
