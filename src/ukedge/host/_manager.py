"""The instance manager: the one implementation of instance lifecycle on a host.

``ukedge run`` uses it in-process (daemonless, like podman and kraft) and the host agent serves
the same manager over REST. An instance is an image plus overrides, started as one machine of a
hypervisor backend; its record (SQLite) says what was asked and what was last seen, the machine's
work directory holds what the hypervisor knows. Reading an instance reconciles the two: a machine
that ended while nobody watched becomes ``exited`` with the app's status, or ``failed``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ukedge.build.guest import guest_cmdline, launch_archive
from ukedge.errors import InstanceError, MachineError, UkedgeError, UsageError
from ukedge.host._health import wait_healthy
from ukedge.host._layers import UnpackedLayers
from ukedge.host._models import Instance, InstanceState, PortMapping, RunRequest
from ukedge.host._names import NAME_PATTERN, random_name
from ukedge.host._state import InstanceRecords
from ukedge.image import (
    ImageConfig,
    ImageManifest,
    ImageStore,
    StoredImage,
    canonical_json,
    digest_bytes,
    mediatypes,
)
from ukedge.vmm import Machine, MachineBackend, MachineSpec, MachineState, MachineStats, PortForward

__all__ = ["InstanceManager", "open_manager"]

log = logging.getLogger(__name__)

# The guest side of QEMU's user-mode network; the host reaches the guest only through
# forwarded ports, so every instance can use the same addresses.
_GUEST_IP = "10.0.2.15/24"
_GATEWAY = "10.0.2.2"
_DNS = "10.0.2.3"
_LOG_POLL_S = 0.05


@dataclass(frozen=True)
class _Plan:
    """What one run of an image needs, resolved once from the store."""

    image: StoredImage
    config: ImageConfig
    kernel: Path
    initrds: list[Path]
    launch: bytes
    memory_mib: int
    vcpus: int
    #: Snapshot key: equal for runs whose guests are identical up to seed and clock.
    key: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InstanceManager:
    """Creates, starts, observes, stops and removes instances on this host."""

    def __init__(
        self,
        root: Path,
        store: ImageStore,
        backend: MachineBackend,
        layers: UnpackedLayers,
        snapshots: Path | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = store
        self.backend = backend
        self.layers = layers
        self.records = InstanceRecords(root / "state.db")
        #: Snapshots of ready guests (``prewarm``); derived data, shared by every instance.
        self.snapshots = snapshots or root / "snapshots"
        #: Called with an ended instance just before ``remove`` deletes its directory, so that
        #: whoever reads its files (the results forwarder) can take what is left.
        self.before_remove: list[Callable[[Instance], None]] = []

    # -- creation --------------------------------------------------------------------------------

    def run(self, request: RunRequest) -> Instance:
        """Create an instance from ``request`` and start its machine; returns once QEMU runs.

        When a snapshot of the same image and launch settings exists (``prewarm``), the machine
        resumes from it instead of booting, unless ``request.cold`` asks for a real boot.
        """
        plan = self._plan(request)
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
        )
        self._check_ports(instance, plan.config)
        snapshot = None if request.cold else self._snapshot_if_any(plan.key)
        self.records.add(instance)
        workdir = Path(instance.workdir)
        try:
            workdir.mkdir(mode=0o700)
            spec = self._spec(plan, instance_id, workdir, request.ports, snapshot)
            self._set(instance.id, state=InstanceState.STARTING, restored=snapshot is not None)
            machine = self.backend.start(spec)
        except UkedgeError as exc:
            self._set(
                instance.id, state=InstanceState.FAILED, error=str(exc), finished_at=time.time()
            )
            raise
        return self._set(
            instance.id, state=InstanceState.RUNNING, pid=machine.pid, started_at=time.time()
        )

    def prewarm(self, request: RunRequest, *, timeout: float = 300.0) -> Path:
        """Boot ``request``'s image until its health check passes and save that machine as the
        snapshot later runs with the same image and launch settings resume from.

        Booting a Python app under TCG takes seconds; resuming the ready guest takes a fraction
        of that. Returns the snapshot directory (an existing one is reused).
        """
        plan = self._plan(request)
        check = plan.config.healthcheck
        if check is None:
            raise InstanceError(
                f"{plan.image.ref} has no health check, so there is no moment at which its app is "
                "known to be ready to snapshot; add [healthcheck] to its Ukfile"
            )
        target = self.snapshots / plan.key
        if target.is_dir():
            return target
        self.snapshots.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(dir=self.root, prefix=".prewarm-"))
        port = _free_port()
        forward = PortMapping(host_port=port, guest_port=check.port)
        machine = self.backend.start(self._spec(plan, workdir.name[1:], workdir, [forward], None))
        try:
            wait_healthy(
                check, "127.0.0.1", port, timeout=timeout, alive=lambda: not machine.state.final
            )
            staging = self.snapshots / f".{plan.key}.{os.getpid()}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            machine.snapshot(staging)
            staging.replace(target)
        finally:
            with contextlib.suppress(UkedgeError):
                machine.kill()
            shutil.rmtree(workdir, ignore_errors=True)
        return target

    def _snapshot_if_any(self, key: str) -> Path | None:
        path = self.snapshots / key
        return path if path.is_dir() else None

    def _plan(self, request: RunRequest) -> _Plan:
        image, manifest = self.store.manifest(request.image)
        config = self.store.config(manifest)
        kernel, initrds = self._boot_files(manifest)
        launch = launch_archive(
            config, env=request.env, args=request.args, hostname=request.hostname or config.name
        )
        memory = request.memory_mib or config.memory_mib
        vcpus = request.vcpus or config.vcpus
        # Everything the guest sees at boot except the per-boot seed and clock: two runs with
        # the same key may resume from the same snapshot.
        key = digest_bytes(
            canonical_json(
                {
                    "image": image.digest,
                    "launch": digest_bytes(launch),
                    "memory_mib": memory,
                    "vcpus": vcpus,
                    "cmdline": config.boot.cmdline,
                    "backend": self.backend.name,
                }
            )
        ).split(":", 1)[1]
        return _Plan(image, config, kernel, initrds, launch, memory, vcpus, key)

    def _spec(
        self,
        plan: _Plan,
        machine_id: str,
        workdir: Path,
        ports: Sequence[PortMapping],
        restore_from: Path | None,
    ) -> MachineSpec:
        launch = workdir / "launch.cpio"
        launch.write_bytes(plan.launch)
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
                seed=os.urandom(32),
                clock=time.time(),
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

    def _check_ports(self, instance: Instance, config: ImageConfig) -> None:
        declared = {p.port for p in config.ports}
        for mapping in instance.ports:
            if declared and mapping.guest_port not in declared:
                log.info("guest port %s is not declared by %s", mapping.guest_port, instance.image)
        for other in self.list(all_instances=False):
            busy = {(p.host_ip, p.host_port, p.protocol) for p in other.ports}
            for mapping in instance.ports:
                if (mapping.host_ip, mapping.host_port, mapping.protocol) in busy:
                    raise InstanceError(
                        f"host port {mapping.host_ip}:{mapping.host_port} is already published by "
                        f"instance {other.name}; stop it or pick another port"
                    )

    # -- observation -----------------------------------------------------------------------------

    def _set(self, instance_id: str, **changes: object) -> Instance:
        return self.records.update(instance_id, lambda i: i.model_copy(update=changes))

    def _machine(self, instance: Instance) -> Machine:
        return self.backend.attach(Path(instance.workdir) / "vm")

    def _refresh(self, instance: Instance) -> Instance:
        if not instance.state.active:
            return instance
        try:
            status = self._machine(instance).status()
        except MachineError as exc:
            return self._set(
                instance.id, state=InstanceState.FAILED, error=str(exc), finished_at=time.time()
            )
        if status.state is MachineState.EXITED:
            return self._set(
                instance.id,
                state=InstanceState.EXITED,
                exit_code=status.exit_code,
                finished_at=time.time(),
            )
        if status.state is MachineState.FAILED:
            return self._set(
                instance.id,
                state=InstanceState.FAILED,
                exit_code=status.exit_code,
                error=status.detail or "the machine ended without reporting an exit status",
                finished_at=time.time(),
            )
        return instance

    def get(self, key: str) -> Instance:
        return self._refresh(self.records.find(key))

    def list(self, *, all_instances: bool = False) -> list[Instance]:
        instances = [self._refresh(i) for i in self.records.all()]
        if not all_instances:
            instances = [i for i in instances if i.state.active]
        return sorted(instances, key=lambda i: i.created_at, reverse=True)

    def wait(self, key: str, timeout: float | None = None) -> Instance:
        instance = self.records.find(key)
        if instance.state.active:
            with contextlib.suppress(MachineError):
                self._machine(instance).wait(timeout)
        return self.get(instance.id)

    def stats(self, key: str) -> MachineStats:
        instance = self.get(key)
        if not instance.state.active:
            raise InstanceError(
                f"instance {instance.name} is {instance.state.value}; it has no stats"
            )
        return self._machine(instance).stats()

    # -- control ---------------------------------------------------------------------------------

    def stop(self, key: str, timeout: float = 10.0) -> Instance:
        """Ask the app to end (SIGTERM in the guest), kill after ``timeout``; returns the result."""
        instance = self.get(key)
        if not instance.state.active:
            return instance
        self._set(instance.id, state=InstanceState.STOPPING)
        self._machine(instance).stop(timeout)
        return self.get(instance.id)

    def kill(self, key: str) -> Instance:
        instance = self.get(key)
        if not instance.state.active:
            raise InstanceError(f"instance {instance.name} is not running ({instance.state.value})")
        self._machine(instance).kill()
        return self.get(instance.id)

    def remove(self, key: str, *, force: bool = False) -> Instance:
        instance = self.get(key)
        if instance.state.active:
            if not force:
                raise InstanceError(
                    f"instance {instance.name} is {instance.state.value}; "
                    "stop it first or use --force"
                )
            self._machine(instance).kill()
            instance = self.get(instance.id)
        for hook in self.before_remove:
            hook(instance)
        self.records.delete(instance.id)
        shutil.rmtree(instance.workdir, ignore_errors=True)
        return instance

    # -- output ------------------------------------------------------------------------------------

    def console_path(self, instance: Instance) -> Path:
        return Path(instance.workdir) / "vm" / "console.log"

    def results_path(self, instance: Instance) -> Path:
        return Path(instance.workdir) / "vm" / "results.jsonl"

    def follow(
        self, key: str, path_of: str = "console", *, follow: bool = True, offset: int = 0
    ) -> Iterator[bytes]:
        """Yield the console (or results) from byte ``offset`` as it grows; ends when the
        instance has ended."""
        instance = self.records.find(key)
        path = self.console_path(instance) if path_of == "console" else self.results_path(instance)
        while True:
            done = not follow or not self.get(instance.id).state.active
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    while chunk := f.read(1 << 16):
                        offset += len(chunk)
                        yield chunk
            if done:
                return
            time.sleep(_LOG_POLL_S)


def open_manager(backend: str = "qemu") -> InstanceManager:
    """The manager over this user's store, instances and layer cache (``ukedge.paths``)."""
    from ukedge import paths, vmm

    return InstanceManager(
        paths.instances_dir(),
        ImageStore(paths.store_dir()),
        vmm.create(backend),
        UnpackedLayers(paths.cache_dir() / "unpacked"),
        paths.cache_dir() / "snapshots",
    )
