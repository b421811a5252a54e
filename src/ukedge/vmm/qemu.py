"""The QEMU backend: machines as detached QEMU processes, controlled through QMP and the
guest's control port, with all their state in their work directory.

A machine's work directory holds ``machine.json`` (pid, start time, argv, spec, stop/kill
marks, and the final status once someone observed it), the QMP and control sockets, the
console log, the results file and QEMU's own log. Any process can re-adopt the machine from
that directory (:meth:`MachineBackend.attach`), which is how ``ukedge run -d`` and a restarted
host agent keep control of machines they did not start (or started in an earlier life).

QMP (asyncio, qemu.qmp) and the snapshot code load when a machine is started or spoken to:
listing instances reads their work directories only, and ``ukedge ps`` does without them.

Long on purpose: the backend's machine type stays private behind its factory (the backend
contract), so its operations live together; the parts that stand alone are apart already
(``_qemu_argv``, ``_qmp``, ``_snapshot``, ``_proc``, ``_paths``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ukedge.errors import MachineError, MachineTimeoutError, StateError, UsageError
from ukedge.faults import crash_point
from ukedge.guest import read_exit_status, resume_message
from ukedge.vmm import _proc
from ukedge.vmm._accel import accelerator_for
from ukedge.vmm._liveness import STATE_VERSION
from ukedge.vmm._paths import MachinePaths
from ukedge.vmm._qemu_argv import (
    Accel,
    QemuOptions,
    RamFile,
    RoDisk,
    build_argv,
    machine_binary,
)
from ukedge.vmm.base import (
    KILLED_STATUS,
    Machine,
    MachineBackend,
    MachineSpec,
    MachineState,
    MachineStats,
    MachineStatus,
)

__all__ = ["QemuOptions", "qemu_backend"]

log = logging.getLogger(__name__)

#: How long kill() waits for the process to disappear after SIGKILL.
_KILL_GRACE = 5.0


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".machine.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ro_disk(spec: MachineSpec) -> RoDisk | None:
    if spec.disk is None:
        return None
    disk = spec.disk.resolve()
    size = disk.stat().st_size
    if size == 0 or size % (2 << 20):
        raise UsageError(
            f"disk image {disk} of machine {spec.machine_id} is {size} bytes, not a non-zero "
            "multiple of 2 MiB (ukedge pads the runtime images it makes)"
        )
    return RoDisk(disk, size)


def _concat_initrds(parts: tuple[Path, ...], target: Path) -> Path:
    """One initramfs from several (compressed or plain) cpio archives.

    Each part starts at a 4-byte boundary: Linux only recognises a plain cpio archive at an
    aligned offset (else "invalid magic at start of compressed archive") and skips the zero
    padding between archives.
    """
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        offset = 0
        for part in parts:
            if offset % 4:
                offset += os.write(fd, b"\0" * (4 - offset % 4))
            with part.open("rb") as src:
                size = os.fstat(src.fileno()).st_size
                done = 0
                while done < size:
                    sent = os.copy_file_range(src.fileno(), fd, size - done)
                    if sent == 0:
                        raise MachineError(f"initrd {part} shrank while it was being read")
                    done += sent
                offset += done
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(target)
    return target


def _describe_wait_status(status: int | None) -> str | None:
    """Why QEMU ended, from its wait status (only known to the process that started it)."""
    if status is None:
        return None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        hint = " (blocked by the -sandbox seccomp filter)" if sig == signal.SIGSYS else ""
        return f"QEMU was killed by {signal.Signals(sig).name}{hint}"
    code = os.WEXITSTATUS(status)
    return f"QEMU exited with status {code} without a guest exit report" if code else None


class _QemuMachine:
    """One QEMU process and its work directory."""

    def __init__(self, paths: MachinePaths, record: dict[str, Any]) -> None:
        self._paths = paths
        self._record = record
        self._spec = MachineSpec.from_json(record["spec"])

    # -- identity ---------------------------------------------------------------------------

    @property
    def machine_id(self) -> str:
        return self._spec.machine_id

    @property
    def spec(self) -> MachineSpec:
        return self._spec

    @property
    def pid(self) -> int:
        return int(self._record["pid"])

    @property
    def workdir(self) -> Path:
        return self._paths.workdir

    @property
    def console_path(self) -> Path:
        return self._paths.console

    @property
    def results_path(self) -> Path:
        return self._paths.results

    @property
    def qmp_path(self) -> Path:
        return self._paths.qmp

    @property
    def log_path(self) -> Path:
        return self._paths.log

    @property
    def accel(self) -> str:
        return str(self._record.get("accel", ""))

    @property
    def options(self) -> QemuOptions:
        """The backend options the machine was started with."""
        return QemuOptions.from_json(self._record["options"])

    @property
    def argv(self) -> list[str]:
        return list(self._record["argv"])

    @property
    def shared_ram(self) -> Path | None:
        """The shared RAM file of a snapshot template's source, else None."""
        ram = self._record.get("shared_ram")
        return Path(ram) if ram else None

    def __repr__(self) -> str:
        return f"<QemuMachine {self.machine_id} pid={self.pid} {self.state.value}>"

    # -- state ------------------------------------------------------------------------------

    def _starttime(self) -> int:
        return int(self._record["starttime"])

    def _alive(self) -> bool:
        return _proc.is_alive(self.pid, self._starttime())

    def _refresh(self) -> None:
        """Pick up marks (stop requested, killed, final status) other processes wrote."""
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(self._paths.state.read_text())
            if record.get("pid") == self._record.get("pid"):
                self._record = record

    def _save(self, **changes: Any) -> None:
        self._refresh()
        self._record.update(changes)
        _atomic_write_json(self._paths.state, self._record)

    def _final_status(self) -> MachineStatus:
        """Work out (once) how a machine whose QEMU is gone ended, and record it."""
        final = self._record.get("final")
        if final:
            return MachineStatus(
                MachineState(final["state"]), self.pid, final.get("exit_code"), final["detail"]
            )
        wait_status = _proc.reap(self.pid)
        status = read_exit_status(self._paths.console)
        if status is not None:
            result = MachineStatus(MachineState.EXITED, self.pid, status, "app exited")
        elif self._record.get("killed"):
            result = MachineStatus(MachineState.EXITED, self.pid, KILLED_STATUS, "killed")
        else:
            why = self._qemu_error() or _describe_wait_status(wait_status)
            why = why or f"the guest ended without an exit report; see {self._paths.console}"
            result = MachineStatus(MachineState.FAILED, self.pid, None, why)
        with contextlib.suppress(OSError):
            self._save(
                final={
                    "state": result.state.value,
                    "exit_code": result.exit_code,
                    "detail": result.detail,
                },
                ended_at=time.time(),
            )
        return result

    def _await_started(self, timeout: float, *, restored: bool, deferred: bool = False) -> None:
        """Return once QEMU has set the machine up and runs the guest; raise if it gave up.

        QEMU answers on QMP only after every device and port forward is in place, so a
        configuration QEMU refuses (a host port already in use) is reported by ``start``
        instead of surfacing later as a FAILED machine. The guest boots meanwhile: waiting
        here costs the boot nothing. A restored machine is waited for until its state is
        loaded: connections accepted before that are lost when the saved network state
        replaces the live one. ``deferred``: QEMU waits for ``migrate-incoming`` (a template
        clone), sent once on the first session.
        """
        import asyncio

        from ukedge.vmm import _qmp, _snapshot

        deadline = time.monotonic() + timeout
        pending = [deferred]

        async def poll(session: _qmp.Session) -> str:
            if pending[0]:
                pending[0] = False
                try:
                    await _snapshot.load_template(session)
                except Exception as exc:  # final, not retried: the machine is killed below
                    return f"refused: {exc}"
            while True:
                info = await session.execute("query-status")
                status = info.get("status") if isinstance(info, dict) else None
                if not restored or status != "inmigrate" or time.monotonic() > deadline:
                    return str(status)
                await asyncio.sleep(0.005)

        status = "unknown"
        while time.monotonic() < deadline:
            current = self.status()
            if current.state is MachineState.EXITED and not restored:
                return  # so fast that the app already ended (KVM): started, and done
            if current.state.final:
                raise MachineError(
                    f"machine {self.machine_id} did not start: {current.detail}", self.machine_id
                )
            if self._paths.qmp.exists():
                try:
                    status = _qmp.run(self._paths.qmp, poll, machine_id=self.machine_id)
                    break
                except MachineError:
                    pass  # not serving QMP yet, or just died (checked above)
            time.sleep(0.005)
        else:
            log.warning("machine %s: QEMU not up after %g s; not waiting", self.machine_id, timeout)
            return
        if restored and status != "running":
            with contextlib.suppress(MachineError):
                self.kill()
            raise MachineError(
                f"machine {self.machine_id} did not resume from {self.spec.restore_from} "
                f"(QEMU status {status!r}); it was killed",
                self.machine_id,
            )
        if restored:
            self._refresh_clone()

    def _refresh_clone(self) -> None:
        """Give a resumed guest the current time, fresh entropy and its own hostname over its
        control port: every clone starts with the snapshot's, and the clock stood still in it.
        Init then signals the app so its runtime can reseed too.

        The clone keeps the snapshot's MAC address. On QEMU's user-mode network, the only one
        ukedge sets up, that address is seen by nobody outside the VM, and changing it loses
        connections: the network learns the guest's MAC from the guest's first frames after the
        resume (QEMU asks a restored guest to announce itself), sent with the snapshot's
        address before init changes it, so a connection arriving before the guest's next
        gratuitous ARP sends its SYN to the old address, the NIC's filter drops it, and TCP
        sends it again only after 3 s (measured: 2 of 92 resumes lost their first connection
        so; none of 180 without the change)."""
        message = resume_message(
            clock=time.time(), seed=os.urandom(32), hostname=self.spec.hostname
        )
        ctl = self._send_control(message)
        if ctl is None:
            log.warning(
                "machine %s resumed without a control port: its clock, RNG and hostname "
                "are the snapshot's",
                self.machine_id,
            )
            return
        ctl.close()

    def _mark_failed(self, detail: str) -> None:
        """Record a final FAILED status without touching the process."""
        self._save(final={"state": MachineState.FAILED.value, "exit_code": None, "detail": detail})

    def _qemu_error(self) -> str | None:
        try:
            lines = self._paths.log.read_text(errors="replace").splitlines()
        except OSError:
            return None
        errors = [ln.strip() for ln in lines if ln.strip() and "terminating on signal" not in ln]
        return f"QEMU: {errors[-1]}" if errors else None

    @property
    def state(self) -> MachineState:
        return self.status().state

    def status(self) -> MachineStatus:
        self._refresh()
        if self._record.get("final") or not self._alive():
            return self._final_status()
        if self._record.get("stop_requested"):
            state = MachineState.STOPPING
        elif self._paths.qmp.exists():
            # QEMU creates its sockets once the machine is configured, just before the vCPUs
            # run; checking the file costs nothing and keeps QMP off the boot path.
            state = MachineState.RUNNING
        else:
            state = MachineState.STARTING
        return MachineStatus(state, self.pid)

    def _require_live(self, operation: str) -> MachineStatus:
        status = self.status()
        if status.state.final:
            err = StateError(status.state.value, "running", self.machine_id)
            err.args = (
                f"machine {self.machine_id} has {status.state.value} "
                f"(exit status {status.exit_code}); {operation} needs a running machine. "
                "Start a new one, or read its console log for what happened.",
            )
            raise err
        return status

    # -- operations -------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> int:
        if not self._record.get("final") and not _proc.wait_gone(
            self.pid, self._starttime(), timeout
        ):
            raise MachineTimeoutError(
                f"machine {self.machine_id} still runs after {timeout:g} s; "
                "stop() it or wait longer",
                self.machine_id,
                timeout or 0.0,
            )
        status = self.status()
        if status.state is MachineState.FAILED or status.exit_code is None:
            raise MachineError(
                f"machine {self.machine_id} failed: {status.detail}", self.machine_id
            )
        return status.exit_code

    def kill(self) -> None:
        self._require_live("kill")
        self._save(killed=True)
        self._signal(signal.SIGKILL)
        with contextlib.suppress(MachineTimeoutError):
            _proc.wait_gone(self.pid, self._starttime(), _KILL_GRACE)

    def _signal(self, signum: int) -> None:
        _proc.send_signal(self.pid, self._starttime(), signum)

    def stop(self, timeout: float = 10.0) -> int:
        status = self.status()
        if status.state.final:
            return self.wait(0)
        self._save(stop_requested=True, stop_requested_at=time.time())
        deadline = time.monotonic() + timeout
        # Ask QMP first: once "stop" is sent the guest may power off at once.
        listening = self._control_open()
        ctl = self._send_control(b"stop\n")
        try:
            if not listening:
                # The guest never opened its control port (another kernel, or still booting):
                # press the ACPI power button too.
                with contextlib.suppress(MachineError):
                    self.qmp("system_powerdown")
            try:
                return self.wait(max(0.0, deadline - time.monotonic()))
            except MachineTimeoutError:
                log.info("machine %s ignored stop for %g s; killing it", self.machine_id, timeout)
        finally:
            if ctl is not None:
                ctl.close()
        with contextlib.suppress(StateError):
            self.kill()
        return self.wait(_KILL_GRACE)

    def _send_control(self, line: bytes) -> socket.socket | None:
        """Write a control line; the connection stays open until the caller closes it so the
        line is delivered even if the guest reads it late."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(2.0)
            sock.connect(str(self._paths.control))
            sock.sendall(line)
        except OSError as exc:
            log.debug("control port of %s not reachable: %s", self.machine_id, exc)
            sock.close()
            return None
        return sock

    def _control_open(self) -> bool:
        """Whether the guest has opened its control port (so it will act on ``stop``)."""
        try:
            chardevs = self.qmp("query-chardev")
        except MachineError:
            return False
        if not isinstance(chardevs, list):
            return False
        return any(
            isinstance(c, dict) and c.get("label") == "control" and c.get("frontend-open")
            for c in chardevs
        )

    def qmp(self, command: str, args: dict[str, Any] | None = None) -> object:
        """Run one QMP command in a short session and return its result (an escape hatch
        for callers that need more than this interface). Raises MachineError (StateError
        when the machine has ended)."""
        from ukedge.vmm import _qmp

        self._require_live(command)
        (result,) = _qmp.execute(self._paths.qmp, [(command, args)], machine_id=self.machine_id)
        return result

    def snapshot(self, path: Path, *, resume: bool = False) -> None:
        from ukedge.vmm import _snapshot

        self._require_live("snapshot")
        _snapshot.save(self, Path(path), resume=resume)

    def resume(self) -> None:
        self._require_live("resume")
        self.qmp("cont")

    def migrate_to(
        self,
        fd: int,
        *,
        downtime_limit_ms: int,
        auto_converge: bool,
        postcopy: bool = False,
        on_postcopy: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        from ukedge.vmm import _migrate

        self._require_live("migrate")
        return _migrate.send(
            self,
            fd,
            downtime_limit_ms=downtime_limit_ms,
            auto_converge=auto_converge,
            postcopy=postcopy,
            on_postcopy=on_postcopy,
        )

    def accept_postcopy(self) -> None:
        from ukedge.vmm import _migrate

        self._require_live("accept_postcopy")
        _migrate.accept_postcopy(self)

    def incoming_status(self) -> str | None:
        from ukedge.vmm import _migrate

        self._require_live("incoming_status")
        return _migrate.incoming_status(self)

    def wait_incoming(self, timeout: float) -> str:
        from ukedge.vmm import _migrate

        self._require_live("wait_incoming")
        return _migrate.wait_loaded(self, timeout)

    def stats(self) -> MachineStats:
        self._require_live("stats")
        result = _proc.stats(self.pid)
        if result is None or not self._alive():
            raise StateError("exited", "running", self.machine_id)
        return result


class _QemuBackend:
    """Starts QEMU machines; see :func:`qemu_backend`."""

    name = "qemu"
    #: How long ``start`` waits for QEMU to come up (and a restore to finish).
    start_timeout = 60.0

    def __init__(self, options: QemuOptions) -> None:
        self.options = options
        self._resolved: QemuOptions | None = None

    def _runtime_options(self) -> QemuOptions:
        """The options with QEMU's binary resolved to an absolute path (looked up once)."""
        if self._resolved is None:
            found = shutil.which(self.options.binary)
            if found is None:
                raise MachineError(
                    f"{self.options.binary} not found; install QEMU "
                    "(Debian: apt-get install qemu-system-x86)"
                )
            self._resolved = dataclasses.replace(self.options, binary=found)
        return self._resolved

    def _check_binary(self, options: QemuOptions, architecture: str) -> None:
        binary = machine_binary(options, architecture)
        if architecture != "x86_64" and not Path(binary).is_file():
            raise MachineError(
                f"{binary} not found: {architecture} guests need QEMU for {architecture} "
                "(Debian: apt-get install qemu-system-arm)"
            )

    def accelerator(self, architecture: str = "x86_64") -> Accel:
        """KVM or TCG for guests of ``architecture``: always TCG for another architecture than
        the host's (KVM cannot run it), else the option or the probe's verdict."""
        if self.options.accel != "auto" and architecture == platform.machine():
            return self.options.accel
        return accelerator_for(
            architecture, binary=machine_binary(self.options, architecture)
        ).accel

    def argv(self, spec: MachineSpec, accel: Accel | None = None) -> list[str]:
        """The QEMU command line ``start`` would run for ``spec`` (for ``--dry-run``/tests)."""
        paths = MachinePaths(spec.workdir.resolve())
        initrd = self._initrd_path(spec, paths)
        options = self._runtime_options()
        accel = accel or self.accelerator(spec.architecture)
        return build_argv(spec, options, accel, paths, initrd, disk=_ro_disk(spec))

    @staticmethod
    def _initrd_path(spec: MachineSpec, paths: MachinePaths) -> Path | None:
        if not spec.initrds:
            return None
        if len(spec.initrds) == 1:
            return spec.initrds[0].resolve()
        return paths.initrd

    def _check_inputs(self, spec: MachineSpec) -> None:
        disk = [("disk", spec.disk)] if spec.disk is not None else []
        for what, path in [
            ("kernel", spec.kernel),
            *(("initrd", p) for p in spec.initrds),
            *disk,
        ]:
            if not path.is_file():
                raise UsageError(f"{what} {path} of machine {spec.machine_id} does not exist")

    def _prepare_workdir(self, spec: MachineSpec, paths: MachinePaths) -> None:
        workdir = paths.workdir
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        workdir.chmod(0o700)
        if paths.sockets != workdir:
            _private_dir(paths.sockets.parent)
            _private_dir(paths.sockets)
        if paths.state.exists():
            with contextlib.suppress(MachineError):
                old = self.attach(workdir)
                if not old.state.final:
                    raise UsageError(
                        f"{workdir} holds running machine {old.machine_id} (pid {old.pid}); "
                        "stop it or use another work directory"
                    )
        # A QEMU of this directory that no machine.json records would hold the machine's
        # ports and run on unseen beside the new one.
        self.kill_strays(workdir)
        for stale in (paths.state, paths.qmp, paths.control, paths.console, paths.log):
            stale.unlink(missing_ok=True)

    def start(self, spec: MachineSpec) -> Machine:
        self._check_inputs(spec)
        paths = MachinePaths(spec.workdir.resolve())
        spec = MachineSpec.from_json({**spec.to_json(), "workdir": str(paths.workdir)})
        self._prepare_workdir(spec, paths)
        accel = self.accelerator(spec.architecture)
        # A restored machine never reads its initramfs again: the guest unpacked it before the
        # snapshot, and fw_cfg's contents are not in the state stream. Without one a clone
        # skips writing (and the host caching) its own joined copy, 16 MiB for sensor-agg.
        initrd = None if spec.restore_from is not None else self._initrd_path(spec, paths)
        if initrd is not None and len(spec.initrds) > 1:
            _concat_initrds(tuple(p.resolve() for p in spec.initrds), initrd)
        # Both exist from the start so readers (logs -f, results followers) need no retry.
        paths.results.touch(mode=0o600)
        paths.console.touch(mode=0o600)
        options = self._runtime_options()
        self._check_binary(options, spec.architecture)
        incoming = None
        ram: RamFile | None = None
        if spec.restore_from is not None:
            # Snapshots (and QMP under them) load only for a restore: a cold boot spawns QEMU
            # first and imports QMP while the guest boots (in _await_started).
            from ukedge.vmm import _snapshot

            _snapshot.check_compatible(spec, options, accel)
            ram = _snapshot.template_ram(spec.restore_from)
            # A template's stream needs x-ignore-shared set first, which only QMP can do.
            incoming = "fd:3" if ram is None else "defer"
        elif spec.incoming:
            paths.incoming.unlink(missing_ok=True)
            incoming = f"unix:{paths.incoming}"
        elif spec.template and options.template_snapshots and not options.balloon:
            paths.ram.unlink(missing_ok=True)  # never reuse an earlier run's RAM
            ram = RamFile(paths.ram, shared=True)
        argv = build_argv(
            spec, options, accel, paths, initrd, incoming=incoming, ram=ram, disk=_ro_disk(spec)
        )
        try:
            state_file = None
            if spec.restore_from is not None:
                from ukedge.vmm import _snapshot

                state_file = _snapshot.state_file(spec.restore_from)
            pid = _proc.spawn_detached(argv, paths.log, fd3=state_file, no_thp=options.no_thp)
        except OSError as exc:
            raise MachineError(
                f"cannot start {argv[0]} for machine {spec.machine_id}: {exc}", spec.machine_id
            ) from exc
        crash_point("vmm.start.after_spawn")
        st = _proc.read_stat(pid)
        record: dict[str, Any] = {
            "version": STATE_VERSION,
            "backend": self.name,
            "pid": pid,
            "starttime": st.starttime if st else 0,
            "started_at": time.time(),
            "accel": accel,
            "argv": argv,
            "options": options.to_json(),
            "spec": spec.to_json(),
            "stop_requested": False,
            "killed": False,
            "final": None,
            "shared_ram": str(ram.path) if ram is not None and ram.shared else None,
        }
        _atomic_write_json(paths.state, record)
        log.debug("started machine %s: pid %d, %s", spec.machine_id, pid, " ".join(argv))
        machine = _QemuMachine(paths, record)
        if self.options.confirm_start or spec.restore_from is not None:
            machine._await_started(
                self.start_timeout,
                restored=spec.restore_from is not None,
                deferred=incoming == "defer",
            )
        return machine

    def adopt_snapshot(self, path: Path, spec: MachineSpec) -> None:
        from ukedge.vmm import _snapshot

        _snapshot.adopt(
            Path(path), spec, self._runtime_options(), self.accelerator(spec.architecture)
        )

    def kill_strays(self, workdir: Path) -> list[int]:
        # The QMP socket path is private to the machine and only its QEMU's arguments name it.
        paths = MachinePaths(Path(workdir).resolve())
        killed = _proc.kill_naming(str(paths.qmp), _KILL_GRACE)
        for pid in killed:
            log.warning("killed QEMU pid %d of %s: no machine record named it", pid, workdir)
        return killed

    def attach(self, workdir: Path) -> Machine:
        paths = MachinePaths(Path(workdir).resolve())
        try:
            record = json.loads(paths.state.read_text())
        except FileNotFoundError:
            raise MachineError(f"{workdir} holds no machine (no {paths.state.name})") from None
        except (OSError, ValueError) as exc:
            raise MachineError(f"cannot read machine state {paths.state}: {exc}") from exc
        if not isinstance(record, dict) or record.get("backend") != self.name:
            raise MachineError(f"{paths.state} is not a {self.name} machine")
        if record.get("version") != STATE_VERSION:
            raise MachineError(
                f"{paths.state} has state version {record.get('version')}, expected "
                f"{STATE_VERSION}; it was written by another ukedge version"
            )
        machine = _QemuMachine(paths, record)
        if record.get("final") or _proc.same_process(
            machine.pid, int(record["starttime"]), str(paths.qmp)
        ):
            return machine
        if _proc.is_alive(machine.pid, int(record["starttime"])):
            # Same pid and start time but not our command line: the record is not this
            # process's; never adopt (or signal) it.
            machine._mark_failed(f"pid {machine.pid} is not this machine's QEMU; not adopted")
        else:
            machine.status()  # gone: record how it ended
        return machine


def _private_dir(path: Path) -> None:
    """A directory only we may use (in a shared /tmp: refuse one someone else made)."""
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise MachineError(f"{path} is not a directory of user {os.getuid()}; remove it")
    path.chmod(0o700)


def qemu_backend(config: Mapping[str, Any]) -> MachineBackend:
    """The QEMU backend with the given :class:`QemuOptions` fields."""
    try:
        options = QemuOptions(**config)
    except TypeError as exc:
        raise UsageError(f"bad QEMU backend option: {exc}") from None
    return _QemuBackend(options)
