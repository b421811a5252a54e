"""The instance manager: the one implementation of instance lifecycle on a host.

``ukedge run`` uses it in-process (daemonless, like podman and kraft) and the host agent serves
the same manager over REST. An instance is an image plus overrides; each start runs one machine
of a hypervisor backend in the instance's directory. Its record (SQLite) says what was asked and
what was last seen, the machine's work directory holds what the hypervisor knows. Reading an
instance reconciles the two: a machine that ended while nobody watched becomes ``exited`` with
the app's status, or ``failed``.

Every record change goes through :meth:`InstanceManager._change`, which commits it and then
tells the ``listeners`` (the agent's event stream). :meth:`InstanceManager.supervise` is the
agent's reconcile pass: health probes, restart policies with back-off.

Threads: the agent calls ``supervise`` from one thread while REST calls run in others. Each
instance has a lock; operations that decide from an instance's state and then act on its machine
(start, stop, kill, remove, a policy restart) hold it, and ``supervise`` skips an instance whose
lock is taken. Across processes, the decisive writes re-check the record inside their SQLite
transaction (a start that finds a stop arrived while it booted kills what it started).

Crashes: a start, stop or prewarm holds its instance's operation lock (``_oplock``) from before
it writes a transitional state (``starting``, ``stopping``) until it has written the next, so
a reader that finds such a state with the lock free knows the process doing it died and
finishes the job (:meth:`InstanceManager._recover`): the restarted agent's first read adopts a
machine a dead starter left, fails the run when none runs, kills what a dead stop left.
"""

from __future__ import annotations

import builtins
import collections
import concurrent.futures
import contextlib
import errno
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ukedge.build.guest import host_tsc_khz
from ukedge.errors import (
    AdmissionError,
    InstanceError,
    MachineError,
    NoSuchInstanceError,
    UkedgeError,
    UsageError,
)
from ukedge.faults import crash_point
from ukedge.guest import (
    HELD_LINE,
    UNPACK_FAILED_STATUS,
    guest_cmdline,
    is_held,
    launch_archive,
    seed_archive,
)
from ukedge.host._admission import Capacity, Committed, admit, committed, holds_resources
from ukedge.host._console import earlier_consoles, keep_previous_run, read_console, read_results
from ukedge.host._health import check_once, next_health, wait_healthy
from ukedge.host._layers import UnpackedLayers
from ukedge.host._models import (
    HealthStatus,
    Instance,
    InstanceEvent,
    InstanceState,
    InstanceStats,
    PortMapping,
    RunRequest,
)
from ukedge.host._names import NAME_PATTERN, random_name
from ukedge.host._oplock import abandoned, holding
from ukedge.host._restart import is_failure, next_delay, wants_restart
from ukedge.host._service import OutputStream
from ukedge.host._state import InstanceRecords
from ukedge.image import (
    HealthCheck,
    ImageConfig,
    ImageManifest,
    ImageStore,
    StoredImage,
    canonical_json,
    digest_bytes,
    mediatypes,
)
from ukedge.vmm import Machine, MachineBackend, MachineSpec, MachineState, PortForward

__all__ = ["InstanceManager"]

log = logging.getLogger(__name__)

# The guest side of QEMU's user-mode network; the host reaches the guest only through
# forwarded ports, so every instance can use the same addresses.
_GUEST_IP = "10.0.2.15/24"
_GATEWAY = "10.0.2.2"
_DNS = "10.0.2.3"
_LOG_POLL_S = 0.05
#: A probe in ``supervise`` never waits longer than this for the app.
_PROBE_TIMEOUT_S = 1.0
#: Why an instance is failed whose starter died before its machine ran (kill -9 of the agent).
_DIED_STARTING = "the agent (or the process starting it) died while starting it; no machine ran"
#: In a snapshot directory: the manifest digest of the image it was made from.
_SNAPSHOT_IMAGE = "image"
#: See ``InstanceManager.steady_probe_interval_s``.
_STEADY_PROBE_INTERVAL_S = 5.0
#: How long a supervise pass waits for the probes it started (the rest apply next pass).
_PROBE_WAIT_S = 0.1
#: See ``InstanceManager.min_start_period_s``.
_MIN_START_PERIOD_S = 30.0
#: Tries to start a machine whose ephemeral loopback forwards another process took first.
_FORWARD_TRIES = 3


@dataclass(frozen=True)
class _Plan:
    """What one run of an image needs, resolved once from the store."""

    image: StoredImage
    config: ImageConfig
    kernel: Path
    initrds: list[Path]
    launch: bytes
    hostname: str
    memory_mib: int
    vcpus: int
    #: Snapshot key: equal for runs whose guests are identical up to seed and clock.
    key: str


#: What the guest init prints when the kernel could not unpack the image (``unpack_failed``).
_SHORT_OF_MEMORY_LINE = b"ukedge-init: guest memory is too small for this image"


def _memory_message(memory_mib: int, need_mib: int | None) -> str:
    """Why a guest cannot boot with ``memory_mib``: its layers unpack into a RAM root that the
    kernel limits to half the memory it has left."""
    need = f"needs ~{need_mib}M unpacked" if need_mib else "the kernel could not unpack its layers"
    return (
        f"guest memory {memory_mib}M is too small for this image ({need}); set [resources] "
        "memory or -m"
    )


def _wait_held(machine: Machine, timeout: float) -> None:
    """Wait until the guest init, booted with ``hold``, waits before starting the app."""
    deadline = time.monotonic() + timeout
    while not is_held(machine.console_path.read_text(errors="replace")):
        if machine.state.final or time.monotonic() > deadline:
            raise InstanceError(
                f"machine {machine.machine_id} never reached the point before its app starts "
                f"(no {HELD_LINE!r} on its console within {timeout:g} s); see its console"
            )
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_bindable(ports: Sequence[PortMapping]) -> None:
    """Refuse, before anything is recorded, a published port another program on the node holds
    (or an address the node does not have): QEMU would fail on it only once started."""
    for mapping in ports:
        kind = socket.SOCK_DGRAM if mapping.protocol == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU binds
            try:
                probe.bind((mapping.host_ip, mapping.host_port))
            except OSError as exc:
                why = "it is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise InstanceError(
                    f"cannot publish {mapping}: {mapping.host_ip}:{mapping.host_port} cannot be "
                    f"bound on this node ({why})"
                ) from None


def _default_action(state: InstanceState) -> str:
    return {
        InstanceState.CREATED: "create",
        InstanceState.STARTING: "starting",
        InstanceState.RUNNING: "start",
        InstanceState.STOPPING: "stop",
        InstanceState.EXITED: "die",
        InstanceState.FAILED: "die",
    }[state]


@dataclass
class _Probe:
    run: int
    started: float
    future: concurrent.futures.Future[bool]


class InstanceManager:
    """Creates, starts, observes, restarts, stops and removes instances on this host."""

    def __init__(
        self,
        root: Path,
        store: ImageStore,
        backend: MachineBackend,
        layers: UnpackedLayers,
        snapshots: Path | None = None,
        *,
        capacity: Capacity | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = store
        self.backend = backend
        self.layers = layers
        self.records = InstanceRecords(root / "state.db")
        #: Snapshots of ready guests (``prewarm``); derived data, shared by every instance.
        self.snapshots = snapshots or root / "snapshots"
        #: What instances may use; None: no admission control.
        self.capacity = capacity
        #: Called with an ended instance just before ``remove`` deletes its directory, so that
        #: whoever reads its files (the results forwarder) can take what is left.
        self.before_remove: list[Callable[[Instance], None]] = []
        #: Called with every event, synchronously, after the change is committed. A listener
        #: that raises is logged and skipped.
        self.listeners: list[Callable[[InstanceEvent], None]] = []
        #: Failed health probes of each instance (by id) since this manager started: the
        #: record keeps only the current streak, which a passing probe resets.
        self.health_check_failures: collections.Counter[str] = collections.Counter()
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._probes: dict[str, _Probe] = {}
        self._probe_due: dict[str, tuple[int, float]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._machines: dict[str, Machine] = {}
        #: The least start period: until an app first passes its health check it is
        #: ``starting``, not ``unhealthy``, for at least this long (a boot under TCG takes
        #: seconds, and images often declare no start period).
        self.min_start_period_s = _MIN_START_PERIOD_S
        #: Once an app has passed its check, it is probed at most this often: images give
        #: short intervals to be seen ready soon, and each probe wakes an idle guest.
        self.steady_probe_interval_s = _STEADY_PROBE_INTERVAL_S
        #: Health checks by image digest (an image's config never changes).
        self._checks: dict[str, HealthCheck | None] = {}

    def close(self) -> None:
        """Stop the probe threads and close the database (machines keep running)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.records.close()

    # -- records and events ------------------------------------------------------------------------

    def _lock(self, instance_id: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(instance_id, threading.RLock())

    def _change(
        self,
        instance_id: str,
        change: Callable[[Instance], Instance],
        *,
        action: str | None = None,
        guard: Callable[[Instance, list[Instance]], None] | None = None,
    ) -> Instance:
        """Commit one change of one record, then report it: the one place events come from."""
        before, after = self.records.change(instance_id, change, guard=guard)
        if after == before:
            return after
        if after.state is not before.state:
            self._emit(after, action or _default_action(after.state), before.state)
        elif action is not None:
            self._emit(after, action, before.state)
        elif after.health is not before.health:
            self._emit(after, "health_status", before.state)
        return after

    def _set(self, instance_id: str, *, action: str | None = None, **changes: object) -> Instance:
        return self._change(instance_id, lambda i: i.model_copy(update=changes), action=action)

    def _emit(self, instance: Instance, action: str, previous: InstanceState | None) -> None:
        event = InstanceEvent(
            time=time.time(),
            id=instance.id,
            name=instance.name,
            state=instance.state,
            previous=previous,
            health=instance.health,
            exit_code=instance.exit_code,
            action=action,
        )
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("instance event listener %r failed on %s", listener, action)

    # -- creation --------------------------------------------------------------------------------

    def create(self, request: RunRequest) -> Instance:
        """Record an instance of ``request``'s image (state ``created``); nothing runs yet.

        Raises AdmissionError when the node could not run it beside what it has committed.
        """
        plan = self._plan(request.image, request)
        name = request.name or self._free_name()
        if not NAME_PATTERN.match(name):
            raise UsageError(
                f"invalid instance name {name!r}: use letters, digits, '_', '.', '-' "
                "(at most 63 characters)"
            )
        instance_id = secrets.token_hex(16)
        instance = Instance(
            id=instance_id,
            name=name,
            image=plan.image.ref,
            image_digest=plan.image.digest,
            state=InstanceState.CREATED,
            created_at=time.time(),
            memory_mib=plan.memory_mib,
            vcpus=plan.vcpus,
            ports=request.ports,
            env=request.env,
            args=request.args,
            workdir=str(self.root / instance_id),
            restart=request.restart,
            on_demand=request.on_demand,
            idle_timeout_s=request.idle_timeout_s if request.on_demand else None,
            hostname=request.hostname,
            cold=request.cold,
            health=HealthStatus.NONE,
        )
        for mapping in instance.ports:
            if plan.config.ports and mapping.guest_port not in {p.port for p in plan.config.ports}:
                log.info("guest port %s is not declared by %s", mapping.guest_port, instance.image)
        self._refresh_active()
        # The directory first: a crash between the two then leaves an empty directory, not a
        # record whose every start fails.
        Path(instance.workdir).mkdir(mode=0o700)
        crash_point("host.create.after_mkdir")
        try:
            self.records.add(instance, guard=self._guard)
            crash_point("host.create.after_record")
            # After the guard, which names the instance holding a port, the check that finds
            # other programs holding one.
            _check_bindable(instance.ports)
        except BaseException:
            with contextlib.suppress(NoSuchInstanceError):
                self.records.delete(instance.id)
            shutil.rmtree(instance.workdir, ignore_errors=True)
            raise
        self._emit(instance, "create", None)
        return instance

    def start(self, key: str) -> Instance:
        """Start a created, exited or failed instance: a new machine in the same directory.

        Returns once the machine runs. The console of earlier runs stays readable (``follow``)
        and the results file grows on.
        """
        instance = self.records.find(key)
        with self._lock(instance.id):
            return self._start(instance.id, restart=False)

    def run(self, request: RunRequest) -> Instance:
        """Create an instance and start it; returns once QEMU runs. An on-demand instance is
        only created: the agent's proxy starts it on the first connection.

        When a snapshot of the same image and launch settings exists (``prewarm``), the machine
        resumes from it instead of booting, unless ``request.cold`` asks for a real boot.
        """
        instance = self.create(request)
        if request.on_demand:
            return instance
        try:
            return self.start(instance.id)
        except (AdmissionError, UsageError):
            # Another process took the room between create and start, or the start refused
            # the request: leave nothing behind, so the name stays free for a corrected run.
            self._discard(instance)
            raise

    def _discard(self, instance: Instance) -> None:
        self.records.delete(instance.id)
        shutil.rmtree(instance.workdir, ignore_errors=True)
        self._emit(instance, "remove", instance.state)

    def _start(self, instance_id: str, *, restart: bool) -> Instance:
        instance = self._refresh(self.records.find(instance_id))
        if instance.state.active:
            raise InstanceError(
                f"instance {instance.name} is already {instance.state.value}; stop it first"
            )
        # Held from before "starting" is written until "running" (or the end) is: a reader that
        # finds "starting" with the lock free knows the starter died (see _recover).
        with holding(Path(instance.workdir)):
            return self._start_locked(instance, restart=restart)

    def _start_locked(self, instance: Instance, *, restart: bool) -> Instance:
        instance_id = instance.id
        plan = self._plan(instance.image_digest, instance)
        cold = instance.cold or plan.config.snapshot == "off"
        snapshot = None if cold else self._snapshot_if_any(plan.key)
        check = plan.config.healthcheck

        claimed = False

        def starting(i: Instance) -> Instance:
            # Decided again inside the transaction: another process may have started the
            # instance, or (for a policy restart) stopped it, since it was read above.
            nonlocal claimed
            claimed = not (
                i.state.active or (restart and (i.stopped_by_user or i.restart_at is None))
            )
            if not claimed:
                return i
            return i.model_copy(
                update={
                    "state": InstanceState.STARTING,
                    "restored": snapshot is not None,
                    "stopped_by_user": False,
                    "exit_code": None,
                    "error": None,
                    "pid": None,
                    "started_at": time.time(),
                    "finished_at": None,
                    "health": HealthStatus.STARTING if check else HealthStatus.NONE,
                    "health_failures": 0,
                    "healthy_at": None,
                    "restart_at": None,
                    "upstream_ports": [],  # the last run's forwards; this run picks its own
                    "restart_count": i.restart_count + (1 if restart else 0),
                    "restart_delay_s": i.restart_delay_s if restart else None,
                    "runs": i.runs + 1,
                }
            )

        if not restart and instance.restart_at is None:
            # The instance counted against capacity only while it ran or waited to: check.
            self._refresh_active()
        instance = self._change(instance_id, starting, guard=self._guard)
        if not claimed:
            if restart:
                log.info("restart of %s cancelled: it was stopped or started", instance.name)
                return instance
            raise InstanceError(
                f"instance {instance.name} is already {instance.state.value}; stop it first"
            )
        crash_point("host.start.after_claim")
        workdir = Path(instance.workdir)
        try:
            keep_previous_run(workdir)
            machine, upstream = self._boot(plan, instance, workdir, snapshot, check)
        except UkedgeError as exc:
            self._change(instance_id, self._ended(InstanceState.FAILED, None, str(exc), restart))
            raise
        crash_point("host.start.after_boot")
        pid = machine.pid

        def running(i: Instance) -> Instance:
            if i.state is not InstanceState.STARTING:
                return i  # stopped (by another process) while it booted
            return i.model_copy(
                update={"state": InstanceState.RUNNING, "pid": pid, "upstream_ports": upstream}
            )

        try:
            current = self._change(instance_id, running, action="restart" if restart else "start")
        except BaseException:
            # Removed by another process meanwhile (rm -f), or interrupted: a machine nobody
            # records would run on unseen.
            with contextlib.suppress(MachineError):
                machine.kill()
            raise
        crash_point("host.start.after_running")
        if current.state is not InstanceState.RUNNING:
            log.info("instance %s was stopped while it started; stopping it", current.name)
            with contextlib.suppress(MachineError):
                machine.kill()
            self._change(
                instance_id,
                lambda i: (
                    i.model_copy(update={"pid": pid}) if i.state.active and i.pid is None else i
                ),
            )
            return self._refresh(self.records.find(instance_id))
        return current

    def _boot(
        self,
        plan: _Plan,
        instance: Instance,
        workdir: Path,
        snapshot: Path | None,
        check: HealthCheck | None,
    ) -> tuple[Machine, list[PortMapping]]:
        """Start the machine with fresh loopback forwards; retried when another process took
        one of those ports between choosing and binding it."""
        published = [p for p in instance.ports if not (instance.on_demand and p.protocol == "tcp")]
        for attempt in range(1, _FORWARD_TRIES + 1):
            upstream = self._upstream_ports(instance, check)
            spec = self._spec(plan, instance.id, workdir, [*published, *upstream], snapshot)
            try:
                return self.backend.start(spec), upstream
            except MachineError as exc:
                if not upstream or "host forwarding" not in str(exc) or attempt == _FORWARD_TRIES:
                    raise
                log.info("instance %s: loopback forward taken meanwhile; retrying", instance.name)
        raise AssertionError("unreachable")

    def _upstream_ports(self, instance: Instance, check: HealthCheck | None) -> list[PortMapping]:
        guest_ports: list[int] = []
        if instance.on_demand:
            guest_ports += [p.guest_port for p in instance.ports if p.protocol == "tcp"]
        elif check is not None:
            published = {p.guest_port for p in instance.ports if p.protocol == "tcp"}
            if check.port not in published:
                guest_ports.append(check.port)
        if check is not None and instance.on_demand and check.port not in guest_ports:
            guest_ports.append(check.port)
        return [
            PortMapping(host_ip="127.0.0.1", host_port=_free_port(), guest_port=port)
            for port in dict.fromkeys(guest_ports)
        ]

    def upstream(self, instance: Instance, guest_port: int) -> tuple[str, int]:
        """Where the host reaches ``guest_port`` of the running ``instance`` (TCP): a loopback
        forward of the manager's (on-demand proxy, health checks) or a published port."""
        for mapping in instance.upstream_ports:
            if mapping.guest_port == guest_port:
                return mapping.host_ip, mapping.host_port
        if not instance.on_demand:
            for mapping in instance.ports:
                if mapping.guest_port == guest_port and mapping.protocol == "tcp":
                    host = "127.0.0.1" if mapping.host_ip == "0.0.0.0" else mapping.host_ip
                    return host, mapping.host_port
        raise InstanceError(
            f"instance {instance.name} has no host-side forward to guest port {guest_port}"
            + ("" if instance.state.active else f" (it is {instance.state.value})")
        )

    def _guard(self, instance: Instance, others: list[Instance]) -> None:
        """Refuse a record that would claim a host port another instance holds, or more memory
        or vCPUs than the node has left. Runs inside the writing transaction."""
        for other in others:
            if not holds_resources(other):
                continue
            for mapping in instance.ports:
                if any(mapping.overlaps(theirs) for theirs in other.ports):
                    raise InstanceError(
                        f"host port {mapping.host_ip}:{mapping.host_port} is already published "
                        f"by instance {other.name}; stop it or pick another port"
                    )
        if self.capacity is not None:
            admit(
                self.capacity, committed(others), instance.name, instance.memory_mib, instance.vcpus
            )

    def prewarm(self, request: RunRequest, *, timeout: float = 300.0) -> Path:
        """Boot ``request``'s image until its health check passes and save that machine as the
        snapshot later runs with the same image and launch settings resume from.

        Booting a Python app under TCG takes seconds; resuming the ready guest takes a fraction
        of that. Returns the snapshot directory (an existing one is reused). An image built
        with ``snapshot = "pre-app"`` is saved before its app starts instead (init holds there
        until a clone is resumed); one with ``"off"`` is refused.
        """
        plan = self._plan(request.image, request)
        check = plan.config.healthcheck
        pre_app = plan.config.snapshot == "pre-app"
        if plan.config.snapshot == "off":
            raise InstanceError(
                f'{plan.image.ref} is built with snapshot = "off" in its Ukfile: its app '
                "cannot be cloned, so every run boots"
            )
        if check is None and not pre_app:
            raise InstanceError(
                f"{plan.image.ref} has no health check, so there is no moment at which its app is "
                "known to be ready to snapshot; add [healthcheck] to its Ukfile"
            )
        target = self.snapshots / plan.key
        if target.is_dir():
            return target
        self.snapshots.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(dir=self.root, prefix=".prewarm-"))
        # Held while the prewarm's machine may run: a leftover whose lock is free is a dead
        # prewarm's, which the next agent sweeps at once (sweep_prewarm_leftovers).
        with holding(workdir):
            return self._prewarm_in(workdir, plan, check, timeout, pre_app=pre_app)

    def _prewarm_in(
        self,
        workdir: Path,
        plan: _Plan,
        check: HealthCheck | None,
        timeout: float,
        *,
        pre_app: bool,
    ) -> Path:
        target = self.snapshots / plan.key
        port = _free_port()
        forwards = [] if check is None else [PortMapping(host_port=port, guest_port=check.port)]
        spec = self._spec(
            plan, workdir.name[1:], workdir, forwards, None, snapshot_source=True, hold=pre_app
        )
        # Names of its own: two prewarms of one image (two REST calls) may run at once.
        staging = Path(tempfile.mkdtemp(dir=self.snapshots, prefix=f".{plan.key}.", suffix=".tmp"))
        try:
            machine = self.backend.start(spec)
            crash_point("host.prewarm.after_boot")
            try:
                if pre_app:
                    _wait_held(machine, timeout)
                else:
                    assert check is not None
                    wait_healthy(
                        check,
                        "127.0.0.1",
                        port,
                        timeout=timeout,
                        alive=lambda: not machine.state.final,
                    )
                machine.snapshot(staging)
                (staging / _SNAPSHOT_IMAGE).write_text(plan.image.digest)
                crash_point("host.prewarm.after_snapshot")
            finally:
                with contextlib.suppress(UkedgeError):
                    machine.kill()
            try:
                staging.replace(target)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # The other prewarm finished first; its snapshot is as good as this one.
            crash_point("host.prewarm.after_rename")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
        return target

    def sweep_prewarm_leftovers(self, older_than_s: float = 3600.0) -> int:
        """Kill and delete what a prewarm killed mid-way (kill -9 of the agent) left: its
        machine and directories. A prewarm directory goes once its operation lock is free (its
        process died); a half-written snapshot once no prewarm runs, or once it is older than
        any prewarm's time limit. Returns how many went."""
        swept = 0
        running = False
        for path in self.root.glob(".prewarm-*"):
            if not abandoned(path):
                running = True
                continue
            self._kill_orphaned_machine(path / "vm")
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
        if not self.snapshots.is_dir():
            return swept
        cutoff = time.time() - older_than_s
        for path in self.snapshots.glob(".*.tmp"):
            try:
                if running and path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
        return swept

    def sweep_removed_leftovers(self) -> int:
        """Delete what a remove killed mid-way left: instance directories whose record is gone.

        Only directories that held a machine (a ``vm`` directory) and whose operation lock is
        free: a create in another process makes its (empty) directory before its record.
        Returns how many went."""
        recorded = {i.id for i in self.records.all()}
        swept = 0
        for path in self.root.iterdir():
            if path.name in recorded or path.name.startswith(".") or not (path / "vm").is_dir():
                continue
            if not abandoned(path) or path.name in {i.id for i in self.records.all()}:
                continue
            self._kill_orphaned_machine(path / "vm")
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
        return swept

    def drop_snapshots(self, image_digests: Collection[str]) -> list[Path]:
        """Delete the prewarm snapshots of these images (the image cache calls it when it
        removes images: a snapshot holds a guest's memory, and nothing else would ever delete
        it). Returns what went."""
        dropped: list[Path] = []
        if not self.snapshots.is_dir():
            return dropped
        for path in self.snapshots.iterdir():
            try:
                digest = (path / _SNAPSHOT_IMAGE).read_text().strip()
            except OSError:
                continue  # staging, or made before snapshots named their image
            if digest in image_digests:
                shutil.rmtree(path, ignore_errors=True)
                dropped.append(path)
        return dropped

    def _snapshot_if_any(self, key: str) -> Path | None:
        path = self.snapshots / key
        return path if path.is_dir() else None

    def _plan(self, ref: str, what: RunRequest | Instance) -> _Plan:
        image, manifest = self.store.manifest(ref)
        config = self.store.config(manifest)
        kernel, initrds = self._boot_files(manifest)
        argv = [*config.entrypoint, *(config.args if what.args is None else what.args)]
        env = {**config.env, **(what.env or {})}
        # Each instance is its own host (its name) unless the run or the Ukfile names one; a
        # resumed clone is told its hostname, so the snapshot key counts the launch without it.
        instance_name = what.name if isinstance(what, Instance) else None
        hostname = what.hostname or config.hostname or instance_name or config.name
        launch = launch_archive(argv=argv, env=env, workdir=config.workdir, hostname=hostname)
        shared = launch_archive(argv=argv, env=env, workdir=config.workdir, hostname=config.name)
        memory = what.memory_mib or config.memory_mib
        if config.min_memory_mib is not None and memory < config.min_memory_mib:
            raise UsageError(_memory_message(memory, config.min_memory_mib))
        vcpus = what.vcpus or config.vcpus
        # Everything the guest sees at boot except the per-boot seed and clock: two runs with
        # the same key may resume from the same snapshot.
        key = digest_bytes(
            canonical_json(
                {
                    "image": image.digest,
                    "launch": digest_bytes(shared),
                    "memory_mib": memory,
                    "vcpus": vcpus,
                    "cmdline": config.boot.cmdline,
                    "backend": self.backend.name,
                    # Bumped when the way a snapshot is made changes (zeroed-1: the prewarm boot
                    # zeroes what it frees, so a resumed guest never faults those pages in).
                    "snapshot": "zeroed-1",
                }
            )
        ).split(":", 1)[1]
        return _Plan(image, config, kernel, initrds, launch, hostname, memory, vcpus, key)

    def _spec(
        self,
        plan: _Plan,
        machine_id: str,
        workdir: Path,
        ports: Sequence[PortMapping],
        restore_from: Path | None,
        *,
        snapshot_source: bool = False,
        hold: bool = False,
    ) -> MachineSpec:
        # The launch archive and this boot's RNG seed, readable by QEMU's user only: the seed
        # must not be on the command line, which every local user sees in ps.
        launch = workdir / "launch.cpio"
        launch.unlink(missing_ok=True)  # an earlier run's may have another mode
        fd = os.open(launch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(plan.launch + seed_archive(os.urandom(32)))
        return MachineSpec(
            machine_id=machine_id,
            kernel=plan.kernel,
            workdir=workdir / "vm",
            initrds=[*plan.initrds, launch],
            cmdline=guest_cmdline(
                plan.config.boot.cmdline,
                ip=_GUEST_IP,
                gateway=_GATEWAY,
                dns=_DNS,
                clock=time.time(),
                tsc_khz=host_tsc_khz(),
                snapshot_source=snapshot_source,
                hold=hold,
            ),
            memory_mib=plan.memory_mib,
            vcpus=plan.vcpus,
            ports=[
                PortForward(
                    p.host_port, p.guest_port, p.host_ip, "udp" if p.protocol == "udp" else "tcp"
                )
                for p in ports
            ],
            restore_from=restore_from,
            hostname=plan.hostname,
        )

    def _boot_files(self, manifest: ImageManifest) -> tuple[Path, list[Path]]:
        kernels = [
            layer for layer in manifest.layers if layer.media_type in mediatypes.KERNEL_TYPES
        ]
        if len(kernels) != 1:
            raise InstanceError(f"image must have exactly one kernel layer, found {len(kernels)}")
        initrds = [
            layer for layer in manifest.layers if layer.media_type in mediatypes.INITRD_TYPES
        ]
        return (
            self.layers.unpacked(self.store, kernels[0]),
            [self.layers.unpacked(self.store, layer) for layer in initrds],
        )

    def _free_name(self) -> str:
        taken = {i.name for i in self.records.all()}
        for _ in range(100):
            name = random_name()
            if name not in taken:
                return name
        return f"{random_name()}_{secrets.token_hex(2)}"

    # -- observation -----------------------------------------------------------------------------

    def _machine(self, instance: Instance) -> Machine:
        """The instance's machine; re-attached only when the run changed (attaching parses the
        machine's whole record, and supervise asks for every instance twice a second)."""
        cached = self._machines.get(instance.id)
        if cached is not None and instance.pid is not None and cached.pid == instance.pid:
            return cached
        machine = self.backend.attach(Path(instance.workdir) / "vm")
        self._machines[instance.id] = machine
        return machine

    @staticmethod
    def _ended(
        state: InstanceState, exit_code: int | None, error: str | None, policy_applies: bool
    ) -> Callable[[Instance], Instance]:
        """The change that records an ended run, and whether (and when) the policy restarts it."""

        def change(i: Instance) -> Instance:
            now = time.time()
            failed = is_failure(state, exit_code, unhealthy=i.health is HealthStatus.UNHEALTHY)
            restart = policy_applies and wants_restart(
                i.restart,
                failed=failed,
                restart_count=i.restart_count,
                stopped_by_user=i.stopped_by_user,
            )
            delay = next_delay(i.restart_delay_s, now - (i.started_at or now)) if restart else None
            return i.model_copy(
                update={
                    "state": state,
                    "exit_code": exit_code,
                    "error": error if error is not None else i.error,
                    "finished_at": now,
                    "restart_at": now + delay if delay is not None else None,
                    "restart_delay_s": delay if delay is not None else i.restart_delay_s,
                }
            )

        return change

    def _refresh(self, instance: Instance) -> Instance:
        if not instance.state.active:
            return instance
        if instance.pid is None:
            # Between "starting" and the machine's start: another thread or process boots it,
            # unless that process died meanwhile.
            return self._recover(instance) if self._abandoned(instance) else instance
        try:
            machine = self._machine(instance)
            if machine.pid != instance.pid:
                return instance  # another start replaced the machine; its record follows
            status = machine.status()
            if (
                not status.state.final
                and instance.state is InstanceState.STOPPING
                and self._abandoned(instance)
            ):
                # The process stopping it died before the machine ended: finish the stop.
                log.warning("instance %s: its stop was cut short; killing it", instance.name)
                with contextlib.suppress(MachineError):
                    machine.kill()
                status = machine.status()
        except MachineError as exc:
            ended = self._ended(InstanceState.FAILED, None, str(exc), True)
            return self._change(instance.id, self._when_pid(instance.pid, ended))
        exited = status.state is MachineState.EXITED
        if exited and self._short_of_memory(instance, status.exit_code):
            error = _memory_message(instance.memory_mib, self._min_memory(instance.image_digest))
            ended = self._ended(InstanceState.FAILED, status.exit_code, error, True)
        elif status.state is MachineState.EXITED:
            ended = self._ended(InstanceState.EXITED, status.exit_code, None, True)
        elif status.state is MachineState.FAILED:
            detail = status.detail or "the machine ended without reporting an exit status"
            ended = self._ended(InstanceState.FAILED, status.exit_code, detail, True)
        else:
            return instance
        return self._change(instance.id, self._when_pid(instance.pid, ended))

    def _short_of_memory(self, instance: Instance, exit_code: int | None) -> bool:
        """Whether the guest init ended the run because the kernel could not unpack the image
        (its status alone could be the app's own)."""
        if exit_code != UNPACK_FAILED_STATUS:
            return False
        try:
            with self.console_path(instance).open("rb") as f:
                return _SHORT_OF_MEMORY_LINE in f.read(1 << 16)
        except OSError:
            return False

    def _min_memory(self, image: str) -> int | None:
        try:
            return self.store.config(self.store.manifest(image)[1]).min_memory_mib
        except UkedgeError:
            return None

    def _abandoned(self, instance: Instance) -> bool:
        """Whether ``instance`` is in a transitional state nobody is finishing: its operation
        lock is free and the record still reads as it did (the operation did not just end)."""
        if not abandoned(Path(instance.workdir)):
            return False
        with contextlib.suppress(NoSuchInstanceError):
            now = self.records.find(instance.id)
            return (now.state, now.pid, now.runs) == (instance.state, instance.pid, instance.runs)
        return False

    def _recover(self, instance: Instance) -> Instance:
        """Finish a start whose process died before it recorded the machine's pid.

        A machine that runs is this run's (the start moved nothing else there while the
        instance was inactive): it is adopted, or killed if a stop came meanwhile. Without
        one the run failed, and the restart policy applies as to any failed run.
        """
        machine: Machine | None = None
        with contextlib.suppress(MachineError):
            found = self.backend.attach(Path(instance.workdir) / "vm")
            if not found.state.final:
                machine = found

        def same_run(i: Instance) -> bool:
            return i.state is instance.state and i.pid is None and i.runs == instance.runs

        if machine is None:
            # Its starter may have died between spawning QEMU and recording it.
            self._kill_orphaned_machine(Path(instance.workdir) / "vm")
            log.warning("instance %s: %s", instance.name, _DIED_STARTING)
            ended = self._ended(InstanceState.FAILED, None, _DIED_STARTING, True)
            return self._change(instance.id, lambda i: ended(i) if same_run(i) else i)
        pid = machine.pid
        if instance.state is InstanceState.STARTING:
            published = {(p.host_ip, p.host_port, p.guest_port, p.protocol) for p in instance.ports}
            upstream = [
                PortMapping(host_ip=f.host_ip, host_port=f.host_port, guest_port=f.guest_port)
                for f in machine.spec.ports
                if (f.host_ip, f.host_port, f.guest_port, f.protocol) not in published
            ]
            log.warning(
                "instance %s: adopting machine pid %d; its starter died", instance.name, pid
            )
            update: dict[str, object] = {
                "state": InstanceState.RUNNING,
                "pid": pid,
                "upstream_ports": upstream,
            }
            return self._change(
                instance.id,
                lambda i: i.model_copy(update=update) if same_run(i) else i,
                action="start",
            )
        # "stopping": a stop or kill came while it started, and the starter died before it
        # could kill what it booted.
        log.warning(
            "instance %s: killing machine pid %d; it was stopped while starting", instance.name, pid
        )
        with contextlib.suppress(MachineError):
            machine.kill()
        current = self._change(
            instance.id, lambda i: i.model_copy(update={"pid": pid}) if same_run(i) else i
        )
        return self._refresh(current) if current.pid == pid else current

    def _kill_orphaned_machine(self, machine_dir: Path) -> None:
        """Kill a machine whose starter died (kill -9) before recording or stopping it."""
        try:
            machine = self.backend.attach(machine_dir)
            if not machine.state.final:
                log.warning("killing machine %s: the process that started it died", machine_dir)
                machine.kill()
        except MachineError:
            pass  # no machine was launched there, or it has ended
        self.backend.kill_strays(machine_dir)  # launched, but its record never written

    @staticmethod
    def _when_pid(
        pid: int | None, change: Callable[[Instance], Instance]
    ) -> Callable[[Instance], Instance]:
        """Apply ``change`` only if the record still describes the machine that was observed
        (so two observers record one end once, and never over a newer run)."""
        return lambda i: change(i) if i.state.active and i.pid == pid else i

    def _refresh_active(self) -> None:
        for instance in self.records.all():
            with contextlib.suppress(NoSuchInstanceError):
                self._refresh(instance)

    def get(self, key: str) -> Instance:
        return self._refresh(self.records.find(key))

    def list(self, *, all_instances: bool = False) -> list[Instance]:
        instances = []
        for record in self.records.all():
            with contextlib.suppress(NoSuchInstanceError):
                instances.append(self._refresh(record))
        if not all_instances:
            instances = [i for i in instances if i.state.active]
        return sorted(instances, key=lambda i: i.created_at, reverse=True)

    def committed(self) -> Committed:
        """Guest memory and vCPUs promised to instances now (what admission counts)."""
        return committed(self.list(all_instances=True))

    def wait(self, key: str, timeout: float | None = None) -> Instance:
        """Block until the current run has ended (or ``timeout``); returns the record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        instance_id = self.records.find(key).id
        while True:
            instance = self.get(instance_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if not instance.state.active or (remaining is not None and remaining <= 0):
                return instance
            if instance.pid is not None:  # else its machine is being started
                with contextlib.suppress(MachineError):
                    self._machine(instance).wait(remaining)
                if not self.get(instance_id).state.active:
                    continue
            time.sleep(_LOG_POLL_S)

    def stats(self, key: str) -> InstanceStats:
        instance = self.get(key)
        if not instance.state.active:
            raise InstanceError(
                f"instance {instance.name} is {instance.state.value}; it has no stats"
            )
        stats = self._machine(instance).stats()
        return InstanceStats(
            id=instance.id,
            name=instance.name,
            rss_bytes=stats.rss_bytes,
            pss_bytes=stats.pss_bytes,
            cpu_seconds=stats.cpu_seconds,
        )

    # -- control ---------------------------------------------------------------------------------

    def stop(self, key: str, timeout: float = 10.0) -> Instance:
        """Ask the app to end (SIGTERM in the guest), kill after ``timeout``; returns the result.

        The restart policy does not apply to this end; a restart the policy had scheduled for
        an ended instance is cancelled.
        """
        instance_id = self.records.find(key).id

        def stopping(i: Instance) -> Instance:
            # Decided in the transaction: another process's supervisor may have begun a policy
            # restart since the read below; that run is then stopped too (its starter sees
            # "stopping" and kills the machine it was booting).
            update: dict[str, object] = {"stopped_by_user": True, "restart_at": None}
            if i.state.active:
                update["state"] = InstanceState.STOPPING
            return i.model_copy(update=update)

        with self._lock(instance_id):
            # Read again under the lock (here and in kill and remove): the read above may
            # predate a restart the supervisor made meanwhile. The read also finishes what a
            # dead process left half-done, which the operation lock below would hide.
            instance = self.get(instance_id)
            with holding(Path(instance.workdir)):
                instance = self._change(
                    instance_id,
                    stopping,
                    action="stop" if instance.restart_at is not None else None,
                )
                crash_point("host.stop.after_stopping")
                if instance.state is InstanceState.STOPPING:
                    with contextlib.suppress(MachineError):
                        self._machine(instance).stop(timeout)
                crash_point("host.stop.after_machine_stop")
            return self.get(instance_id)

    def kill(self, key: str) -> Instance:
        """End the machine at once; the restart policy does not apply."""
        instance_id = self.records.find(key).id
        with self._lock(instance_id):
            instance = self.get(instance_id)
            if not instance.state.active:
                raise InstanceError(
                    f"instance {instance.name} is not running ({instance.state.value})"
                )

            def killing(i: Instance) -> Instance:
                update: dict[str, object] = {"stopped_by_user": True, "restart_at": None}
                if i.state is InstanceState.STARTING:
                    # Another process is booting it: "stopping" makes that starter kill the
                    # machine it launches (there is no pid to kill here yet).
                    update["state"] = InstanceState.STOPPING
                return i.model_copy(update=update)

            instance = self._change(instance_id, killing, action="kill")
            with contextlib.suppress(MachineError):
                self._machine(instance).kill()
            return self.get(instance_id)

    def remove(self, key: str, *, force: bool = False) -> Instance:
        instance_id = self.records.find(key).id
        with self._lock(instance_id):
            instance = self.get(instance_id)
            if instance.state.active:
                if not force:
                    raise InstanceError(
                        f"instance {instance.name} is {instance.state.value}; "
                        "stop it first or use --force"
                    )
                with contextlib.suppress(InstanceError):  # it ended meanwhile
                    self.kill(instance_id)
                instance = self.get(instance_id)
            for hook in self.before_remove:
                hook(instance)
            crash_point("host.remove.before_delete")
            self.records.delete(instance.id)
            crash_point("host.remove.after_delete")
            shutil.rmtree(instance.workdir, ignore_errors=True)
            self._emit(instance, "remove", instance.state)
        with self._locks_guard:
            self._locks.pop(instance.id, None)
        self._probe_due.pop(instance.id, None)
        self._machines.pop(instance.id, None)
        return instance

    # -- supervision -----------------------------------------------------------------------------

    def supervise(self) -> None:
        """One reconcile pass (the agent calls it every ~0.5 s from one thread): record ended
        machines, probe health where due, kill what the policy restarts for being unhealthy,
        and start again what the restart policy says once its back-off has passed.

        An instance busy with another operation (a stop in progress) is left for the next pass.
        Probes run in a small thread pool; a pass waits for them briefly, and records what
        a slower probe found in the next pass.
        """
        self._apply_probes()
        for record in self.records.all():
            lock = self._lock(record.id)
            if not lock.acquire(blocking=False):
                continue
            try:
                # Read again under the lock: the list above may predate a stop or start.
                self._supervise_one(self.records.find(record.id))
            except NoSuchInstanceError:
                pass  # removed meanwhile
            except UkedgeError as exc:
                log.warning("instance %s: %s", record.name, exc)
            except Exception:
                log.exception("supervising instance %s failed", record.name)
            finally:
                lock.release()
        pending = [p.future for p in self._probes.values()]
        if pending:
            concurrent.futures.wait(pending, timeout=_PROBE_WAIT_S)
            self._apply_probes()

    def _supervise_one(self, record: Instance) -> None:
        instance = self._refresh(record)
        if instance.state is InstanceState.RUNNING:
            if self._restart_unhealthy(instance):
                self._kill_unhealthy(instance)
            elif instance.health is not HealthStatus.NONE:
                self._maybe_probe(instance)
            return
        if (
            not instance.state.active
            and instance.restart_at is not None
            and not instance.stopped_by_user
            and instance.restart_at <= time.time()
        ):
            log.info(
                "restarting instance %s (restart %d, policy %s)",
                instance.name,
                instance.restart_count + 1,
                instance.restart,
            )
            try:
                self._start(instance.id, restart=True)
            except Exception as exc:
                # A start that failed before its machine existed (image gone, no room, a bug)
                # leaves the record as it was: try again after a longer back-off, not every pass.
                self._change(instance.id, self._retry_later(instance.restart_at, str(exc)))
                raise

    @staticmethod
    def _retry_later(due: float, error: str) -> Callable[[Instance], Instance]:
        def change(i: Instance) -> Instance:
            if i.state.active or i.restart_at != due:
                return i  # the failed start got as far as recording its own end
            delay = next_delay(i.restart_delay_s, 0.0)
            return i.model_copy(
                update={"error": error, "restart_at": time.time() + delay, "restart_delay_s": delay}
            )

        return change

    def _restart_unhealthy(self, instance: Instance) -> bool:
        """Whether an unhealthy app is killed so that its restart policy starts it again."""
        return instance.health is HealthStatus.UNHEALTHY and wants_restart(
            instance.restart,
            failed=True,
            restart_count=instance.restart_count,
            stopped_by_user=instance.stopped_by_user,
        )

    def _kill_unhealthy(self, instance: Instance) -> None:
        log.info("instance %s is unhealthy; killing it for its restart policy", instance.name)
        self._set(
            instance.id,
            error=f"unhealthy: {instance.health_failures} health checks failed in a row",
        )
        with contextlib.suppress(MachineError):
            self._machine(instance).kill()
        self._refresh(self.records.find(instance.id))

    def _maybe_probe(self, instance: Instance) -> None:
        if instance.id in self._probes:
            return
        check = self._health_check(instance)
        if check is None:
            return
        now = time.monotonic()
        run, due = self._probe_due.get(instance.id, (instance.runs, now))
        if run != instance.runs:
            due = now  # a new run: probe at once
        if now < due:
            return
        interval = check.interval_s
        if instance.healthy_at is not None:
            interval = max(interval, self.steady_probe_interval_s)
        self._probe_due[instance.id] = (instance.runs, now + interval)
        host, port = self.upstream(instance, check.port)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="ukedge-probe")
        future = self._pool.submit(check_once, check, host, port, max_timeout=_PROBE_TIMEOUT_S)
        self._probes[instance.id] = _Probe(instance.runs, time.time(), future)

    def _health_check(self, instance: Instance) -> HealthCheck | None:
        digest = instance.image_digest
        if digest not in self._checks:
            try:
                _, manifest = self.store.manifest(digest)
            except UkedgeError:
                return None  # the image went away; the running machine is probed no more
            self._checks[digest] = self.store.config(manifest).healthcheck
        return self._checks[digest]

    def _apply_probes(self) -> None:
        for instance_id, probe in list(self._probes.items()):
            self._apply_probe(instance_id, probe)

    def _apply_probe(self, instance_id: str, probe: _Probe) -> None:
        """Record a finished probe's verdict (if the run it probed still runs)."""
        if not probe.future.done():
            return
        del self._probes[instance_id]
        try:
            passed = probe.future.result()
            check = self._health_check(self.records.find(instance_id))
        except NoSuchInstanceError:
            return
        except Exception:
            log.exception("health probe of instance %s failed", instance_id)
            return
        if check is None:
            return
        start_period = max(check.start_period_s, self.min_start_period_s)
        failed = False

        def change(i: Instance) -> Instance:
            nonlocal failed
            if i.state is not InstanceState.RUNNING or i.runs != probe.run:
                return i
            failed = not passed
            health, failures = next_health(
                i.health,
                i.health_failures,
                passed=passed,
                retries=check.retries,
                in_start_period=probe.started - (i.started_at or 0) < start_period,
            )
            healthy_at = i.healthy_at or (probe.started if passed else None)
            return i.model_copy(
                update={"health": health, "health_failures": failures, "healthy_at": healthy_at}
            )

        with contextlib.suppress(NoSuchInstanceError):
            self._change(instance_id, change)
        if failed:
            self.health_check_failures[instance_id] += 1

    # -- output ----------------------------------------------------------------------------------

    def console_path(self, instance: Instance) -> Path:
        """The current (or last) run's console."""
        return Path(instance.workdir) / "vm" / "console.log"

    def console_paths(self, instance: Instance) -> builtins.list[Path]:
        """Every run's console, oldest first: what ``follow`` reads as one stream."""
        return [*earlier_consoles(Path(instance.workdir)), self.console_path(instance)]

    def results_path(self, instance: Instance) -> Path:
        """Results of every run, appended in order (never truncated: readers keep offsets)."""
        return Path(instance.workdir) / "vm" / "results.jsonl"

    def follow(
        self,
        key: str,
        stream: OutputStream = "console",
        *,
        follow: bool = True,
        offset: int = 0,
    ) -> Iterator[bytes]:
        """Yield the console (every run's, in order) or the results from byte ``offset`` as
        they grow; with ``follow``, until the instance has ended."""
        instance = self.records.find(key)
        while True:
            done = not follow or not self.get(instance.id).state.active
            workdir = Path(instance.workdir)
            read = read_console if stream == "console" else read_results
            for chunk in read(workdir, offset):
                offset += len(chunk)
                yield chunk
            if done:
                return
            time.sleep(_LOG_POLL_S)
