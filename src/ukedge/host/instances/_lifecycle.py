"""The instance manager's operations: create, start (boot, or resume a prewarm snapshot),
prewarm, stop, kill, remove, and the sweeps of what a killed operation left.

Each decides from an instance's state and then acts on its machine while holding the
instance's lock and, across processes, its operation lock: see the protocol in
:mod:`ukedge.host.instances._manager`, and :mod:`ukedge.host.instances._observe` for the records
and observation these build on.

Long on purpose: every operation follows the same two-lock protocol on the same state machine,
and reads best beside the others; what stands alone (plan, boot files, snapshots, ports,
probes, admission) is in its own module.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import secrets
import shutil
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

from ukedge.errors import (
    AdmissionError,
    InstanceError,
    MachineError,
    NoSuchInstanceError,
    SignatureError,
    UkedgeError,
    UsageError,
)
from ukedge.faults import crash_point
from ukedge.host._models import (
    HealthStatus,
    Instance,
    InstanceEvent,
    InstanceState,
    PortMapping,
    RunRequest,
)
from ukedge.host._names import NAME_PATTERN, random_name
from ukedge.host.instances._admission import admit, committed
from ukedge.host.instances._console import (
    keep_previous_run,
    keep_snapshot_console,
    machine_paths,
)
from ukedge.host.instances._observe import ObservedInstances
from ukedge.host.instances._oplock import abandoned, holding
from ukedge.host.instances._plan import Plan, machine_spec, plan_run
from ukedge.host.instances._ports import check_bindable, check_unclaimed, upstream_ports
from ukedge.host.instances._ports import upstream as upstream_of
from ukedge.host.instances._snapshots import (
    check_snapshottable,
    drop_snapshots,
    find_snapshot,
    make_snapshot,
    snapshot_console,
    sweep_staging,
)
from ukedge.image import (
    HealthCheck,
)
from ukedge.vmm import Machine

__all__ = ["InstanceLifecycle"]

log = logging.getLogger(__name__)

#: Tries to start a machine whose ephemeral loopback forwards another process took first.
_FORWARD_TRIES = 3


class InstanceLifecycle(ObservedInstances):
    """The operations on instances (the middle of :class:`~ukedge.host.InstanceManager`)."""

    # -- creation --------------------------------------------------------------------------------

    def create(self, request: RunRequest) -> Instance:
        """Record an instance of ``request``'s image (state ``created``); nothing runs yet.

        Raises AdmissionError when the node could not run it beside what it has committed, and
        SignatureError (before its layers are even unpacked) when the image check refuses it.
        """
        if self.image_check is not None:
            stored = self.store.resolve(request.image)
            self._check_image(stored.ref, stored.digest, None, name=request.name or "")
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
            auto_remove=request.auto_remove,
            health=HealthStatus.NONE,
            labels=request.labels,
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
            check_bindable(instance.ports)
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
        except (AdmissionError, UsageError, SignatureError):
            # Another process took the room between create and start, or the start refused
            # the request (or its image): leave nothing behind, so the name stays free for a
            # corrected run.
            self._discard(instance)
            raise

    def _check_image(
        self,
        image: str,
        digest: str,
        instance: Instance | None,
        *,
        name: str = "",
        restart: bool = False,
    ) -> None:
        """Refuse a create or a start before anything of it runs when the image check says no,
        with a ``refused`` event (on the instance, when there is one yet); a refused policy
        restart ends as failed instead of being tried every pass."""
        if self.image_check is None:
            return
        try:
            self.image_check(image, digest)
        except SignatureError as exc:
            if instance is None:
                self.announce(
                    InstanceEvent(
                        time=time.time(),
                        id="",
                        name=name,
                        state=InstanceState.CREATED,
                        action="refused",
                        image=image,
                        image_digest=digest,
                        detail=exc.reason,
                    )
                )
                raise
            self._emit(instance, "refused", instance.state, exc.reason)
            error = str(exc)
            if restart:
                self._change(
                    instance.id,
                    lambda i: i.model_copy(
                        update={
                            "state": InstanceState.FAILED,
                            "error": error,
                            "restart_at": None,
                        }
                    ),
                )
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
        self._check_image(instance.image, instance.image_digest, instance, restart=restart)
        plan = self._plan(instance.image_digest, instance)
        cold = instance.cold or plan.config.snapshot == "off"
        snapshot = None if cold else find_snapshot(self.snapshots, plan.key)
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
                    "health": self._initial_health(check),
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
            if snapshot is not None:
                keep_snapshot_console(workdir, snapshot_console(snapshot))
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

    def _initial_health(self, check: HealthCheck | None) -> HealthStatus:
        if check is None:
            return HealthStatus.NONE
        return HealthStatus.STARTING if self.checks_health else HealthStatus.UNCHECKED

    def _boot(
        self,
        plan: Plan,
        instance: Instance,
        workdir: Path,
        snapshot: Path | None,
        check: HealthCheck | None,
    ) -> tuple[Machine, list[PortMapping]]:
        """Start the machine with fresh loopback forwards; retried when another process took
        one of those ports between choosing and binding it."""
        published = [p for p in instance.ports if not (instance.on_demand and p.protocol == "tcp")]
        for attempt in range(1, _FORWARD_TRIES + 1):
            upstream = upstream_ports(instance, check)
            spec = machine_spec(plan, instance.id, workdir, [*published, *upstream], snapshot)
            try:
                machine = self.backend.start(spec)
            except MachineError as exc:
                if not upstream or "host forwarding" not in str(exc) or attempt == _FORWARD_TRIES:
                    raise
                log.info("instance %s: loopback forward taken meanwhile; retrying", instance.name)
                continue
            self._say_if_emulated(instance, spec.architecture)
            return machine, upstream
        raise AssertionError("unreachable")

    def _say_if_emulated(self, instance: Instance, architecture: str) -> None:
        """A guest of another architecture than the node's runs under TCG, many times slower
        than under KVM: said in the log and as an ``emulated`` event, so it is no surprise."""
        host = platform.machine()
        if architecture == host:
            return
        detail = f"{architecture} guest emulated (TCG) on this {host} node: slower than native"
        log.warning("instance %s: %s", instance.name, detail)
        self._emit(instance, "emulated", instance.state, detail)

    def upstream(self, instance: Instance, guest_port: int) -> tuple[str, int]:
        """Where the host reaches ``guest_port`` of the running ``instance`` (TCP): a loopback
        forward of the manager's (on-demand proxy, health checks) or a published port."""
        return upstream_of(instance, guest_port)

    def _guard(self, instance: Instance, others: list[Instance]) -> None:
        """Refuse a record that would claim a host port another instance holds, or more memory
        or vCPUs than the node has left. Runs inside the writing transaction."""
        check_unclaimed(instance, others)
        if self.capacity is not None:
            admit(
                self.capacity, committed(others), instance.name, instance.memory_mib, instance.vcpus
            )

    def _plan(self, ref: str, what: RunRequest | Instance) -> Plan:
        return plan_run(self.store, self.layers, self.backend.name, ref, what, self.platform)

    # -- prewarm snapshots -----------------------------------------------------------------------

    def prewarm(self, request: RunRequest, *, timeout: float = 300.0) -> Path:
        """Boot ``request``'s image until its health check passes and save that machine as the
        snapshot later runs with the same image and launch settings resume from.

        Booting a Python app under TCG takes seconds; resuming the ready guest takes a fraction
        of that. Returns the snapshot directory (an existing one is reused). An image built
        with ``snapshot = "pre-app"`` is saved before its app starts instead (init holds there
        until a clone is resumed); one with ``"off"`` is refused.
        """
        plan = self._plan(request.image, request)
        check_snapshottable(plan)
        existing = find_snapshot(self.snapshots, plan.key)
        if existing is not None:
            return existing
        self.snapshots.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(dir=self.root, prefix=".prewarm-"))
        # Held while the prewarm's machine may run: a leftover whose lock is free is a dead
        # prewarm's, which the next agent sweeps at once (sweep_prewarm_leftovers).
        with holding(workdir):
            return make_snapshot(self.backend, self.snapshots, workdir, plan, timeout)

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
            self._kill_orphaned_machine(machine_paths(path).workdir)
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
        return swept + sweep_staging(
            self.snapshots, prewarm_running=running, older_than_s=older_than_s
        )

    def drop_snapshots(self, image_digests: Collection[str]) -> list[Path]:
        """Delete the prewarm snapshots of these images (the image cache calls it when it
        removes images: a snapshot holds a guest's memory, and nothing else would ever delete
        it). Returns what went."""
        return drop_snapshots(self.snapshots, image_digests)

    def sweep_removed_leftovers(self) -> int:
        """Delete what a remove killed mid-way left: instance directories whose record is gone.

        Only directories that held a machine (a ``vm`` directory) and whose operation lock is
        free: a create in another process makes its (empty) directory before its record.
        Returns how many went."""
        recorded = {i.id for i in self.records.all()}
        swept = 0
        for path in self.root.iterdir():
            if (
                path.name in recorded
                or path.name.startswith(".")
                or not (machine_paths(path).workdir).is_dir()
            ):
                continue
            if not abandoned(path) or path.name in {i.id for i in self.records.all()}:
                continue
            self._kill_orphaned_machine(machine_paths(path).workdir)
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
        return swept

    def _free_name(self) -> str:
        taken = {i.name for i in self.records.all()}
        for _ in range(100):
            name = random_name()
            if name not in taken:
                return name
        return f"{random_name()}_{secrets.token_hex(2)}"

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
        self._probes.forget(instance.id)
        self._machines.pop(instance.id, None)
        return instance
