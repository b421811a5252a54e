"""Conformance suite for hypervisor backends (``ukedge.vmm.base``): boots real guests.

A backend's test module subclasses :class:`MachineBackendSuite` and supplies two fixtures:
``backend`` (a configured :class:`~ukedge.vmm.MachineBackend`) and ``starter`` (argv of a
separate process that starts a machine from a spec given as JSON, see
:func:`starter_command`); every check here then runs against that backend. The guest is the
real ukedge kernel (``ukedge.kernel.ensure_kernel``, built once per machine and cached) with
the real guest init and a tiny static C test app compiled here.
``UKEDGE_TEST_KERNEL=/path/to/vmlinux`` boots another kernel instead (bring your own kernel).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.net import free_port
from ukedge.errors import MachineError, MachineTimeoutError, StateError, UsageError
from ukedge.ports import PortMapping
from ukedge.vmm import (
    KILLED_STATUS,
    Machine,
    MachineBackend,
    MachineSpec,
    MachineState,
)

#: One static test app, several behaviours chosen by argv[1].
APP_SOURCE = textwrap.dedent(
    r"""
    #include <arpa/inet.h>
    #include <fcntl.h>
    #include <netinet/in.h>
    #include <signal.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/socket.h>
    #include <unistd.h>

    static volatile sig_atomic_t got;
    static void on_signal(int s) { got = s; }

    static void result(const char *line) {
        int fd = open("/dev/ukedge-results", O_WRONLY);
        if (fd >= 0) { dprintf(fd, "%s\n", line); close(fd); }
    }

    int main(int argc, char **argv) {
        const char *mode = argc > 1 ? argv[1] : "exit";
        if (strcmp(mode, "exit") == 0) {
            printf("conformance app exiting with %s\n", argc > 2 ? argv[2] : "0");
            result("{\"app\": \"conformance\", \"n\": 1}");
            return argc > 2 ? atoi(argv[2]) : 0;
        }
        if (strcmp(mode, "wait") == 0) {
            signal(SIGTERM, on_signal);
            printf("conformance app waiting\n");
            fflush(stdout);
            while (!got) pause();
            char line[64];
            snprintf(line, sizeof line, "{\"signal\": %d}", (int)got);
            result(line);
            return 42;
        }
        if (strcmp(mode, "spin") == 0) {  /* ignores SIGTERM: only a kill ends it */
            signal(SIGTERM, SIG_IGN);
            printf("conformance app spinning\n");
            fflush(stdout);
            for (;;) pause();
        }
        if (strcmp(mode, "burn") == 0) {  /* computes forever: the guest's vCPU stays busy */
            volatile unsigned long n = 0;
            printf("conformance app burning\n");
            fflush(stdout);
            for (;;) n++;
        }
        if (strcmp(mode, "echo") == 0) {  /* TCP echo server on port argv[2] */
            int srv = socket(AF_INET, SOCK_STREAM, 0), one = 1;
            setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
            if (bind(srv, (struct sockaddr *)&addr, sizeof addr) || listen(srv, 8)) return 2;
            printf("conformance app listening\n");
            fflush(stdout);
            for (;;) {
                int c = accept(srv, 0, 0);
                char buf[512];
                ssize_t n;
                while ((n = read(c, buf, sizeof buf)) > 0) write(c, buf, n);
                close(c);
            }
        }
        return 99;
    }
    """
)


@dataclass(frozen=True)
class Guest:
    """A bootable test guest: kernel, its base command line, and the app layer."""

    kernel: Path
    cmdline: str
    app_layer: Path
    workroot: Path

    def spec(
        self,
        name: str,
        *args: str,
        ports: tuple[PortMapping, ...] = (),
        memory_mib: int = 64,
    ) -> MachineSpec:
        """A machine running the test app with ``args``; its launch archive is the last initrd."""
        from ukedge.build.guest import host_tsc_khz
        from ukedge.guest import guest_cmdline, launch_archive, seed_archive

        workdir = self.workroot / name
        launch = self.workroot / f"{name}.launch.cpio"
        launch.write_bytes(
            launch_archive(
                argv=["/app/conformance", *args], env={}, workdir="/", hostname="conformance"
            )
            + seed_archive(os.urandom(32))
        )
        cmdline = guest_cmdline(
            self.cmdline,
            ip="10.0.2.15/24",
            gateway="10.0.2.2",
            dns="10.0.2.3",
            tsc_khz=host_tsc_khz(),
        )
        return MachineSpec(
            machine_id=name,
            kernel=self.kernel,
            workdir=workdir,
            initrds=[self.app_layer, launch],
            cmdline=cmdline,
            memory_mib=memory_mib,
            ports=ports,
        )


def _build_guest(root: Path) -> Guest:
    from ukedge.build.guest import add_platform
    from ukedge.guest import CpioArchive
    from ukedge.kernel import ensure_kernel, load_profile

    cc = shutil.which("musl-gcc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs musl-gcc or gcc to compile the test app")
    src = root / "conformance.c"
    src.write_text(APP_SOURCE)
    app = root / "conformance"
    subprocess.run([cc, "-static", "-O2", "-o", str(app), str(src)], check=True)
    explicit = os.environ.get("UKEDGE_TEST_KERNEL")
    if explicit:
        kernel, cmdline = Path(explicit), load_profile("minimal").cmdline
    else:
        built = ensure_kernel("minimal")
        kernel, cmdline = built.vmlinux, built.cmdline
    archive = CpioArchive()
    add_platform(archive)
    archive.add_dir("app", 0o755)
    archive.add_file("app/conformance", app, 0o755)
    buf = io.BytesIO()
    archive.write(buf)
    # Compressed like a real image layer; the launch archive after it stays plain, so every
    # boot also checks that a backend joins compressed and plain archives the way Linux needs.
    layer = root / "app.cpio.gz"
    layer.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    workroot = root / "machines"
    workroot.mkdir()
    return Guest(kernel=kernel, cmdline=cmdline, app_layer=layer, workroot=workroot)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` as /proc counts it (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def console_has(machine: Machine, text: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return text in machine.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    return check


#: Under TCG on a loaded 2-core machine a boot takes a few seconds; leave ample room.
BOOT_TIMEOUT = 60.0


@pytest.mark.vm
class MachineBackendSuite:
    """Checks every backend must pass. Subclasses provide a ``backend`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def guest(cls, tmp_path_factory: pytest.TempPathFactory) -> Guest:
        return _build_guest(tmp_path_factory.mktemp("guest"))

    @pytest.fixture
    def machines(self, backend: MachineBackend) -> Iterator[list[Machine]]:
        """Machines a test started; any still running at the end are killed."""
        started: list[Machine] = []
        yield started
        leaked = []
        for machine in started:
            if not machine.state.final:
                with contextlib.suppress(StateError):  # it may end on its own meanwhile
                    machine.kill()
            # A machine reported ended while its hypervisor still runs would leak a VM.
            try:
                cmdline = Path(f"/proc/{machine.pid}/cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if str(machine.workdir).encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(machine.pid, signal.SIGKILL)
                leaked.append(f"{machine.machine_id} (pid {machine.pid}, {machine.status()})")
        assert not leaked, f"hypervisors outlived their machines: {leaked}"

    def test_exit_status_console_and_results(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        machine = backend.start(guest.spec("exit7", "exit", "7"))
        machines.append(machine)
        assert machine.state in (MachineState.STARTING, MachineState.RUNNING, MachineState.EXITED)
        assert machine.wait(BOOT_TIMEOUT) == 7
        status = machine.status()
        assert (status.state, status.exit_code) == (MachineState.EXITED, 7)
        assert "conformance app exiting with 7" in machine.console_path.read_text(errors="replace")
        lines = machine.results_path.read_text().splitlines()
        assert [json.loads(line) for line in lines] == [{"app": "conformance", "n": 1}]
        assert machine.wait(0) == 7  # waiting again answers at once

    def test_workdir_is_private(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        machine = backend.start(guest.spec("private", "exit", "0"))
        machines.append(machine)
        assert machine.workdir.stat().st_mode & 0o777 == 0o700
        assert machine.wait(BOOT_TIMEOUT) == 0

    def test_machine_outlives_the_process_that_started_it(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine], starter: list[str]
    ) -> None:
        spec = guest.spec("detached", "wait")
        subprocess.run([*starter, json.dumps(spec.to_json())], check=True, timeout=BOOT_TIMEOUT)
        machine = backend.attach(spec.workdir)
        machines.append(machine)
        assert not machine.state.final
        wait_for(console_has(machine, "conformance app waiting"), BOOT_TIMEOUT, "the app")
        assert machine.state is MachineState.RUNNING
        assert machine.stop(timeout=BOOT_TIMEOUT) == 42

    def test_graceful_stop_delivers_sigterm_to_the_app(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        machine = backend.start(guest.spec("stop", "wait"))
        machines.append(machine)
        wait_for(console_has(machine, "conformance app waiting"), BOOT_TIMEOUT, "the app")
        assert machine.stop(timeout=BOOT_TIMEOUT) == 42
        assert json.loads(machine.results_path.read_text()) == {"signal": 15}
        assert machine.state is MachineState.EXITED
        assert machine.stop() == 42  # stopping an ended machine just answers

    def test_stop_kills_an_app_that_ignores_sigterm(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        machine = backend.start(guest.spec("stubborn", "spin"))
        machines.append(machine)
        wait_for(console_has(machine, "conformance app spinning"), BOOT_TIMEOUT, "the app")
        # In a thread under a ceiling far above the 1 s asked: a stop that ignores its timeout
        # fails here instead of hanging the suite.
        answer: list[int] = []
        stopper = threading.Thread(
            target=lambda: answer.append(machine.stop(timeout=1.0)), daemon=True
        )
        stopper.start()
        stopper.join(BOOT_TIMEOUT)
        assert answer == [KILLED_STATUS], f"stop(timeout=1.0) answered {answer}"

    def test_kill(self, backend: MachineBackend, guest: Guest, machines: list[Machine]) -> None:
        machine = backend.start(guest.spec("kill", "spin"))
        machines.append(machine)
        machine.kill()
        assert machine.wait(5) == KILLED_STATUS
        status = machine.status()
        assert (status.state, status.exit_code) == (MachineState.EXITED, KILLED_STATUS)
        with pytest.raises(StateError):
            machine.kill()
        with pytest.raises(StateError):
            machine.stats()

    def test_wait_times_out_and_leaves_the_machine_running(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        machine = backend.start(guest.spec("timeout", "spin"))
        machines.append(machine)
        with pytest.raises(MachineTimeoutError):
            machine.wait(0.2)
        assert not machine.state.final

    def test_stats(self, backend: MachineBackend, guest: Guest, machines: list[Machine]) -> None:
        """Stats are the hypervisor process's own, read live: its CPU time as the kernel counts
        it, and growing while the guest computes."""
        machine = backend.start(guest.spec("stats", "burn"))
        machines.append(machine)
        wait_for(console_has(machine, "conformance app burning"), BOOT_TIMEOUT, "the app")
        before = _process_cpu_seconds(machine.pid)
        stats = machine.stats()
        after = _process_cpu_seconds(machine.pid)
        assert 1 << 20 < stats.rss_bytes < 1 << 30
        if stats.pss_bytes is not None:
            assert 0 < stats.pss_bytes <= stats.rss_bytes
        tick = 1 / os.sysconf("SC_CLK_TCK")
        assert before - tick <= stats.cpu_seconds <= after + tick, (before, stats, after)
        # The guest computes, so its hypervisor keeps burning CPU: a second of it must show up
        # (a frozen or cached figure would not).
        wait_for(
            lambda: machine.stats().cpu_seconds >= stats.cpu_seconds + 1.0,
            BOOT_TIMEOUT,
            "the spinning guest's CPU time to grow by 1 s",
        )

    def test_published_port_reaches_the_guest(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        port = free_port()
        machine = backend.start(
            guest.spec(
                "echo", "echo", "7777", ports=(PortMapping(host_port=port, guest_port=7777),)
            )
        )
        machines.append(machine)
        wait_for(console_has(machine, "conformance app listening"), BOOT_TIMEOUT, "the app")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"ping over hostfwd\n")
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(1024):
                received += chunk
        assert received == b"ping over hostfwd\n"

    def test_start_reports_a_busy_host_port(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            spec = guest.spec(
                "busyport", "exit", ports=(PortMapping(host_port=port, guest_port=80),)
            )
            with pytest.raises(MachineError, match=str(port)):
                machines.append(backend.start(spec))

    def test_attach_to_an_ended_machine_reports_its_end(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        machine = backend.start(guest.spec("ended", "exit", "3"))
        machines.append(machine)
        assert machine.wait(BOOT_TIMEOUT) == 3
        again = backend.attach(machine.workdir)
        assert again.status().state is MachineState.EXITED
        assert again.wait(0) == 3
        with pytest.raises(StateError):
            again.kill()

    def test_attach_without_a_machine_is_an_error(
        self, backend: MachineBackend, tmp_path: Path
    ) -> None:
        with pytest.raises(MachineError):
            backend.attach(tmp_path)

    def test_start_refuses_a_missing_kernel(
        self, backend: MachineBackend, guest: Guest, tmp_path: Path
    ) -> None:
        spec = guest.spec("nokernel", "exit")
        bad = MachineSpec.from_json({**spec.to_json(), "kernel": str(tmp_path / "missing")})
        with pytest.raises(UsageError, match="missing"):
            backend.start(bad)

    def test_start_refuses_a_workdir_with_a_live_machine(
        self, backend: MachineBackend, guest: Guest, machines: list[Machine]
    ) -> None:
        machine = backend.start(guest.spec("busy", "spin"))
        machines.append(machine)
        try:
            second = backend.start(guest.spec("busy", "spin"))
        except UsageError as exc:
            assert "holds running machine" in str(exc)
        else:
            machines.append(second)
            pytest.fail(f"a second machine started in a busy workdir; first: {machine.status()}")
        assert not machine.state.final


def starter_command(backend_name: str, config: dict[str, object]) -> list[str]:
    """argv of a separate Python process that starts a machine from a spec (JSON, last arg)
    with ``vmm.create(backend_name, config)`` and exits at once."""
    code = (
        "import json, sys; from ukedge import vmm; "
        f"b = vmm.create({backend_name!r}, json.loads({json.dumps(json.dumps(config))})); "
        "b.start(vmm.MachineSpec.from_json(json.loads(sys.argv[1])))"
    )
    return [sys.executable, "-c", code]
