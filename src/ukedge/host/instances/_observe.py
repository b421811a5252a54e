"""The instance manager's ground floor: records, events, and observation.

Every record change goes through :meth:`ObservedInstances._change`, which commits it and then
tells the ``listeners``. Reading an instance reconciles its record with its machine's work
directory (:meth:`ObservedInstances._refresh`): a machine that ended while nobody watched becomes
``exited`` with the app's status, or ``failed``; a transitional state whose operation lock is
free is finished (:meth:`ObservedInstances._recover`). The operations that change instances are
:class:`~ukedge.host.instances._lifecycle.InstanceLifecycle`'s; the public class is
:class:`~ukedge.host.InstanceManager` (see its module for threads and crashes).

Long on purpose: record changes, their events and the reconciliation of a record with its
machine are one invariant (a record never says what its machine contradicts), kept in one class.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ukedge.errors import (
    InstanceError,
    MachineError,
    NoSuchInstanceError,
    UkedgeError,
)
from ukedge.guest import UNPACK_FAILED_STATUS
from ukedge.host._events import EventJournal
from ukedge.host._models import (
    HealthStatus,
    Instance,
    InstanceEvent,
    InstanceState,
    InstanceStats,
    PortMapping,
)
from ukedge.host._service import OutputStream
from ukedge.host.images import UnpackedLayers
from ukedge.host.instances._admission import Capacity, Committed, committed
from ukedge.host.instances._console import (
    earlier_consoles,
    machine_paths,
    read_console,
    read_results,
)
from ukedge.host.instances._oplock import abandoned
from ukedge.host.instances._plan import memory_message
from ukedge.host.instances._probes import HealthProbes
from ukedge.host.instances._records import RECORDS_FILE, listed_instances
from ukedge.host.instances._restart import is_failure, next_delay, wants_restart
from ukedge.host.instances._settled import record_settled
from ukedge.host.instances._state import InstanceRecords
from ukedge.image import (
    ImageStore,
    Platform,
    host_platform,
)
from ukedge.vmm import Machine, MachineBackend, MachineState

__all__ = ["ObservedInstances"]

log = logging.getLogger(__name__)

_LOG_POLL_S = 0.05
#: What the guest init prints when the kernel could not unpack the image (``unpack_failed``).
_SHORT_OF_MEMORY_LINE = b"ukedge-init: guest memory is too small for this image"
#: Why an instance is failed whose starter died before its machine ran (kill -9 of the agent).
_DIED_STARTING = "the agent (or the process starting it) died while starting it; no machine ran"
#: See ``InstanceManager.steady_probe_interval_s``.
_STEADY_PROBE_INTERVAL_S = 5.0
#: See ``InstanceManager.min_start_period_s``.
_MIN_START_PERIOD_S = 30.0


def _default_action(state: InstanceState) -> str:
    return {
        InstanceState.CREATED: "create",
        InstanceState.STARTING: "starting",
        InstanceState.RUNNING: "start",
        InstanceState.STOPPING: "stop",
        InstanceState.EXITED: "die",
        InstanceState.FAILED: "die",
    }[state]


class ObservedInstances:
    """Records, events and observation of the instances under ``root`` (the base of
    :class:`~ukedge.host.InstanceManager`)."""

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
        self.records = InstanceRecords(root / RECORDS_FILE)
        #: Snapshots of ready guests (``prewarm``); derived data, shared by every instance.
        self.snapshots = snapshots or root / "snapshots"
        #: What instances may use; None: no admission control.
        self.capacity = capacity
        #: The platform this node runs (the agent's ``--platform``; default the host's): the
        #: manifest a multi-platform image runs from unless a run asks for another.
        self.platform: Platform = host_platform()
        #: Called with an ended instance just before ``remove`` deletes its directory, so that
        #: whoever reads its files (the results forwarder) can take what is left.
        self.before_remove: list[Callable[[Instance], None]] = []
        #: Called with every event, synchronously, after the change is committed. A listener
        #: that raises is logged and skipped.
        self.listeners: list[Callable[[InstanceEvent], None]] = []
        #: Called with an image's reference and manifest digest before each create and start
        #: (a restart too); raises SignatureError to refuse it (the node's signature policy,
        #: :mod:`ukedge.host.policy`).
        self.image_check: Callable[[str, str], None] | None = None
        #: Every process's events on this node, for followers in other processes.
        self.journal = EventJournal(root / "events.jsonl")
        #: Failed health probes of each instance (by id) since this manager started: the
        #: record keeps only the current streak, which a passing probe resets.
        self.health_check_failures: collections.Counter[str] = collections.Counter()
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._probes = HealthProbes(store)
        self._machines: dict[str, Machine] = {}
        #: The least start period: until an app first passes its health check it is
        #: ``starting``, not ``unhealthy``, for at least this long (a boot under TCG takes
        #: seconds, and images often declare no start period).
        self.min_start_period_s = _MIN_START_PERIOD_S
        #: Whether a supervisor (the agent's) will probe the instances this process starts;
        #: the daemonless CLI's will not, and their health says "unchecked", not "starting".
        self.checks_health = True
        #: Once an app has passed its check, it is probed at most this often: images give
        #: short intervals to be seen ready soon, and each probe wakes an idle guest.
        self.steady_probe_interval_s = _STEADY_PROBE_INTERVAL_S

    def close(self) -> None:
        """Stop the probe threads and close the database (machines keep running)."""
        self._probes.close()
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
            # A death says why (the record's error), so a follower who finds the record gone
            # (``--rm``) still learns it.
            ended = after.state in (InstanceState.EXITED, InstanceState.FAILED)
            self._emit(
                after,
                action or _default_action(after.state),
                before.state,
                after.error if ended else None,
            )
        elif action is not None:
            self._emit(after, action, before.state)
        elif after.health is not before.health:
            self._emit(after, "health_status", before.state)
        return after

    def _set(self, instance_id: str, *, action: str | None = None, **changes: object) -> Instance:
        return self._change(instance_id, lambda i: i.model_copy(update=changes), action=action)

    def _emit(
        self,
        instance: Instance,
        action: str,
        previous: InstanceState | None,
        detail: str | None = None,
    ) -> None:
        event = InstanceEvent(
            time=time.time(),
            id=instance.id,
            name=instance.name,
            state=instance.state,
            previous=previous,
            health=instance.health,
            exit_code=instance.exit_code,
            action=action,
            image=instance.image if action == "refused" else None,
            image_digest=instance.image_digest if action == "refused" else None,
            detail=detail,
        )
        self.announce(event)

    def announce(self, event: InstanceEvent) -> None:
        """Tell the listeners and the journal of ``event``."""
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("instance event listener %r failed on %s", listener, event.action)
        try:
            self.journal.append(event)
        except OSError as exc:  # the change is committed; only its announcement is lost
            log.warning("cannot append to the event journal %s: %s", self.journal.path, exc)

    # -- observation -----------------------------------------------------------------------------

    def _machine(self, instance: Instance) -> Machine:
        """The instance's machine; re-attached only when the run changed (attaching parses the
        machine's whole record, and supervise asks for every instance twice a second)."""
        cached = self._machines.get(instance.id)
        if cached is not None and instance.pid is not None and cached.pid == instance.pid:
            return cached
        machine = self.backend.attach(machine_paths(Path(instance.workdir)).workdir)
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
        if record_settled(instance.state, instance.pid, instance.workdir):
            return instance  # ended, or its machine runs as recorded (what ps checks too)
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
            error = memory_message(instance.memory_mib, self._min_memory(instance.image_digest))
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
            found = self.backend.attach(machine_paths(Path(instance.workdir)).workdir)
            if not found.state.final:
                machine = found

        def same_run(i: Instance) -> bool:
            return i.state is instance.state and i.pid is None and i.runs == instance.runs

        if machine is None:
            # Its starter may have died between spawning QEMU and recording it.
            self._kill_orphaned_machine(machine_paths(Path(instance.workdir)).workdir)
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
        return listed_instances(
            instances,
            all_instances=all_instances,
            active=lambda i: i.state.active,
            created=lambda i: i.created_at,
        )

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

    # -- output ----------------------------------------------------------------------------------

    def console_path(self, instance: Instance) -> Path:
        """The current (or last) run's console."""
        return machine_paths(Path(instance.workdir)).console

    def console_paths(self, instance: Instance) -> builtins.list[Path]:
        """Every run's console, oldest first: what ``follow`` reads as one stream."""
        return [*earlier_consoles(Path(instance.workdir)), self.console_path(instance)]

    def results_path(self, instance: Instance) -> Path:
        """Results of every run, appended in order (never truncated: readers keep offsets)."""
        return machine_paths(Path(instance.workdir)).results

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
        cut_short = False
        while True:
            current = self.get(instance.id) if follow else instance
            done = not follow or not current.state.active
            workdir = Path(instance.workdir)
            read = read_console if stream == "console" else read_results
            for chunk in read(workdir, offset):
                offset += len(chunk)
                yield chunk
            if done:
                return
            cut_short = self._pause(current, full=cut_short)

    def _pause(self, instance: Instance, *, full: bool) -> bool:
        """Wait one poll interval of a follower, or less when the machine ends meanwhile (its
        output is complete then, and ``run`` returns as soon as the app has ended, not up to an
        interval later). True when cut short; ``full`` sleeps the whole interval (the record
        did not follow the machine's end yet)."""
        if not full and instance.pid is not None:
            began = time.monotonic()
            with contextlib.suppress(MachineError):
                self._machine(instance).wait(_LOG_POLL_S)
            return time.monotonic() - began < _LOG_POLL_S
        time.sleep(_LOG_POLL_S)
        return False
