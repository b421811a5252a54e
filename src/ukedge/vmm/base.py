"""The hypervisor backend contract: what every backend (QEMU today) promises its callers.

A *backend* starts machines from a :class:`MachineSpec` and re-adopts machines that another
process started (:meth:`MachineBackend.attach`). A *machine* is one running VM whose whole
state lives in its own work directory, so any process (the CLI, a restarted host agent) can
pick it up again from that directory alone. Where its console and results lie in that directory
is part of the contract (:class:`~ukedge.vmm.MachinePaths`): the host reads them by path.

The shared behaviour is checked by ``tests/conformance/vmm.py``; a backend's test module runs
that suite by supplying a factory fixture.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ukedge.errors import ImageError, UsageError
from ukedge.guest import check_hostname
from ukedge.image import Platform
from ukedge.ports import PortMapping

__all__ = [
    "KILLED_STATUS",
    "Machine",
    "MachineBackend",
    "MachineSpec",
    "MachineState",
    "MachineStats",
    "MachineStatus",
]

#: Exit status reported for an app whose machine was killed before the app ended (128 + SIGKILL),
#: the convention shells and container engines use.
KILLED_STATUS = 137


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """Everything a backend needs to boot one machine.

    ``initrds`` are concatenated in order into one initramfs (Linux unpacks concatenated cpio
    archives), so shared kernel/runtime layers stay separate files on disk. ``workdir`` is the
    machine's own directory (created 0700 by ``start``); its console log, results file, control
    and QMP sockets and state file live there. ``restore_from`` names a snapshot made by
    ``Machine.snapshot`` of a machine with the same kernel, initrds, memory and vCPUs; the new
    machine resumes from it instead of booting (host port forwards may differ). ``hostname`` is
    told to a resumed guest (a booted one reads its own from the launch archive); each
    machine's MAC address is derived from its ``machine_id``, so two machines on one node never
    share one. ``incoming`` starts the machine paused, waiting for a live migration stream on
    its incoming Unix socket (``MachinePaths.incoming``) instead of booting; it is given the
    same kernel, initrds, memory and vCPUs as the machine that sends it. ``template`` says the
    machine will be saved as a snapshot for many clones: a backend that can keeps its RAM in a
    file the snapshot then shares copy-on-write. ``disk`` is a read-only filesystem image
    (the shared runtime, :mod:`ukedge.build._fsimage`) the guest mounts: attached so that every
    machine maps the same host file and none writes it. A restored or incoming machine must be
    given an image of the same content as the machine it continues. ``architecture`` is the
    guest's machine name (``uname -m``: ``x86_64`` or ``aarch64``,
    :attr:`ukedge.image.Platform.machine`); a backend emulates one that differs from the host's.
    """

    machine_id: str
    kernel: Path
    workdir: Path
    initrds: Sequence[Path] = ()
    cmdline: str = ""
    memory_mib: int = 64
    vcpus: int = 1
    ports: Sequence[PortMapping] = ()
    restore_from: Path | None = None
    hostname: str | None = None
    incoming: bool = False
    template: bool = False
    disk: Path | None = None
    architecture: str = "x86_64"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", Path(self.kernel))
        if self.disk is not None:
            object.__setattr__(self, "disk", Path(self.disk))
        object.__setattr__(self, "workdir", Path(self.workdir))
        object.__setattr__(self, "initrds", tuple(Path(p) for p in self.initrds))
        object.__setattr__(self, "ports", tuple(self.ports))
        if self.restore_from is not None:
            object.__setattr__(self, "restore_from", Path(self.restore_from))
        if not self.machine_id or not all(c.isalnum() or c in "-_." for c in self.machine_id):
            raise UsageError(
                f"machine_id must be letters, digits, '-', '_' or '.', got {self.machine_id!r}"
            )
        if self.hostname is not None:
            check_hostname(self.hostname)
        _check_architecture(self.architecture)
        if not isinstance(self.memory_mib, int) or not 16 <= self.memory_mib <= 1 << 20:
            raise UsageError(f"memory must be 16 MiB to 1 TiB, got {self.memory_mib!r} MiB")
        if not isinstance(self.vcpus, int) or not 1 <= self.vcpus <= 255:
            raise UsageError(f"vcpus must be 1-255, got {self.vcpus!r}")
        seen: set[tuple[str, str, int]] = set()
        for port in self.ports:
            key = (port.protocol, port.host_ip, port.host_port)
            if key in seen:
                raise UsageError(f"host port {port.host_ip}:{port.host_port} is forwarded twice")
            seen.add(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine_id": self.machine_id,
            "kernel": str(self.kernel),
            "workdir": str(self.workdir),
            "initrds": [str(p) for p in self.initrds],
            "cmdline": self.cmdline,
            "memory_mib": self.memory_mib,
            "vcpus": self.vcpus,
            "ports": [p.model_dump() for p in self.ports],
            "restore_from": str(self.restore_from) if self.restore_from else None,
            "hostname": self.hostname,
            "incoming": self.incoming,
            "template": self.template,
            "disk": str(self.disk) if self.disk else None,
            "architecture": self.architecture,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineSpec:
        restore = data.get("restore_from")
        disk = data.get("disk")
        return cls(
            machine_id=str(data["machine_id"]),
            kernel=Path(data["kernel"]),
            workdir=Path(data["workdir"]),
            initrds=[Path(p) for p in data.get("initrds", [])],
            cmdline=str(data.get("cmdline", "")),
            memory_mib=int(data["memory_mib"]),
            vcpus=int(data["vcpus"]),
            ports=[PortMapping.model_validate(p) for p in data.get("ports", [])],
            restore_from=Path(restore) if restore else None,
            hostname=data.get("hostname"),
            incoming=bool(data.get("incoming", False)),
            template=bool(data.get("template", False)),
            disk=Path(disk) if disk else None,
            architecture=str(data.get("architecture", "x86_64")),
        )


def _check_architecture(machine: str) -> None:
    try:
        platform = Platform.of_machine(machine)
    except ImageError as exc:
        raise UsageError(str(exc)) from None
    if platform.machine != machine:
        raise UsageError(
            f"architecture is a machine name ({platform.machine}), not the OCI name {machine!r}"
        )


class MachineState(enum.Enum):
    """Where a machine is in its life; EXITED and FAILED are final."""

    #: Described but not started (a spec only; backends return machines already STARTING).
    CREATED = "created"
    #: The hypervisor process exists but has not finished setting up the VM.
    STARTING = "starting"
    #: The VM runs the guest.
    RUNNING = "running"
    #: A stop was requested and the machine has not ended yet.
    STOPPING = "stopping"
    #: The machine ended; the app's exit status is known (or 137 when it was killed).
    EXITED = "exited"
    #: The machine ended without the guest reporting an exit (hypervisor error or crash).
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (MachineState.EXITED, MachineState.FAILED)


@dataclass(frozen=True, slots=True)
class MachineStatus:
    """A point-in-time view of one machine."""

    state: MachineState
    pid: int
    exit_code: int | None = None
    #: Why a FAILED machine failed, or how an EXITED one ended ("app exited", "killed").
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MachineStats:
    """Host resources the hypervisor process of one machine uses."""

    rss_bytes: int
    cpu_seconds: float
    #: Proportional set size: RSS with pages shared between machines (the kernel file mapped
    #: by every QEMU, the QEMU binary) divided among them; what a machine really costs a host.
    pss_bytes: int | None = None


@runtime_checkable
class Machine(Protocol):
    """One VM started by a backend; every method is safe to call from any process."""

    @property
    def machine_id(self) -> str: ...

    @property
    def spec(self) -> MachineSpec: ...

    @property
    def pid(self) -> int:
        """The hypervisor's process id (valid only while the state is not final)."""
        ...

    @property
    def workdir(self) -> Path: ...

    @property
    def console_path(self) -> Path:
        """The guest's serial console, appended to while the machine runs (logs)."""
        ...

    @property
    def results_path(self) -> Path:
        """JSON lines the app wrote to its results device, appended in order."""
        ...

    @property
    def state(self) -> MachineState:
        """The current state, observed now (not cached)."""
        ...

    def status(self) -> MachineStatus:
        """State, pid and, once final, the exit code and how the machine ended."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Block until the machine ends and return the app's exit status.

        The status is the one the guest reported on its console; 137 when the machine was
        killed before the app ended. Raises MachineTimeoutError when ``timeout`` seconds pass
        first (the machine keeps running) and MachineError when the machine failed without a
        guest exit report (the message points at the hypervisor log).
        """
        ...

    def stop(self, timeout: float = 10.0) -> int:
        """Ask the app to end, wait up to ``timeout`` seconds, then kill; return the exit status.

        The app gets SIGTERM through the control port when the guest listens on it, else the
        VM gets an ACPI power-button press. Stopping a machine that already ended just returns
        its status.
        """
        ...

    def kill(self) -> None:
        """End the machine at once (SIGKILL to the hypervisor).

        Raises StateError when the machine has already ended.
        """
        ...

    def stats(self) -> MachineStats:
        """Resident memory and CPU time of the hypervisor process.

        Raises StateError when the machine has ended.
        """
        ...

    def snapshot(self, path: Path, *, resume: bool = False) -> None:
        """Save the whole running machine (memory, devices, the app's state) into ``path``.

        The machine is paused first; afterwards it stays paused, or runs on with ``resume``.
        New machines start from the snapshot with ``MachineSpec.restore_from`` instead of
        booting. Raises StateError when the machine has ended, MachineError when the backend
        cannot snapshot.
        """
        ...

    def migrate_to(
        self,
        fd: int,
        *,
        downtime_limit_ms: int,
        auto_converge: bool,
        postcopy: bool = False,
        on_postcopy: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Live-migrate the running machine into ``fd`` (a socket whose other end leads to a
        machine started with ``MachineSpec.incoming``); returns once the migration completed,
        with the machine paused here, and QEMU's figures (``ram``, ``downtime`` ms…).

        Raises MachineError when it failed (the machine then runs on here, unless it failed
        after ``on_postcopy`` was called: with ``postcopy`` the receiver took over the guest
        and this machine's RAM is no longer whole; it must not run again).
        """
        ...

    def accept_postcopy(self) -> None:
        """Let a machine started with ``incoming`` take a post-copy stream (call before the
        stream starts)."""
        ...

    def wait_incoming(self, timeout: float) -> str:
        """Wait until a machine started with ``incoming`` has loaded its stream; returns the
        run state (``paused``: loaded, ready to ``resume``). MachineError when it failed."""
        ...

    def incoming_status(self) -> str | None:
        """The status of a machine's incoming migration as the hypervisor reports it
        (``postcopy-active``: the guest may run while the rest of its RAM still arrives;
        ``completed``), or None when it has none to report."""
        ...

    def resume(self) -> None:
        """Let a machine paused by ``snapshot`` run on (a move that failed gives it back).

        Raises StateError when the machine has ended, MachineError when the backend cannot.
        """
        ...


@runtime_checkable
class MachineBackend(Protocol):
    """Starts and re-adopts machines of one hypervisor; picked by name via ``vmm.create``."""

    @property
    def name(self) -> str: ...

    def start(self, spec: MachineSpec) -> Machine:
        """Start a machine that outlives the calling process and return it STARTING or later.

        Creates ``spec.workdir`` (0700). Returns as soon as the hypervisor runs: it does not
        wait for the guest. Raises UsageError for a missing kernel/initrd or a workdir that
        already holds a live machine, MachineError when the hypervisor cannot start.
        """
        ...

    def kill_strays(self, workdir: Path) -> list[int]:
        """Kill hypervisors started in ``workdir`` that its state does not record, and return
        their pids: a starter killed between spawning one and recording it leaves such a
        process, which nothing else would ever find. Only for a directory in which nobody is
        starting a machine now (``start`` calls it itself before it spawns)."""
        ...

    def attach(self, workdir: Path) -> Machine:
        """Re-adopt the machine whose state is in ``workdir`` (started by any process).

        The recorded pid is adopted only if it still is that machine's hypervisor (same start
        time and command line); a dead or reused pid gives a machine in a final state that
        never signals that pid. Raises MachineError when ``workdir`` holds no machine.
        """
        ...

    def adopt_snapshot(self, path: Path, spec: MachineSpec) -> None:
        """Make ``path`` (a machine state received from another node, in ``path``'s state file)
        a snapshot this backend restores ``spec`` from: the node it came from recorded its
        own kernel path, which differs here. The caller vouches that the guest is the same
        (same image digest, memory and vCPUs); UsageError when ``spec`` cannot take it.
        """
        ...
