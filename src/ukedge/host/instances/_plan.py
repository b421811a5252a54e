"""What one run of an image needs, resolved once from the store, and the machine spec of a boot.

The plan's ``key`` names the prewarm snapshot a run may resume from: two runs with equal keys
boot guests that are identical up to the per-boot seed and clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ukedge.build.guest import host_tsc_khz
from ukedge.errors import InstanceError, UsageError
from ukedge.guest import guest_cmdline, launch_archive, seed_archive
from ukedge.host._models import Instance, PortMapping, RunRequest
from ukedge.host.images import RuntimeDisk, UnpackedLayers
from ukedge.host.instances._console import machine_paths
from ukedge.image import (
    ImageConfig,
    ImageManifest,
    ImageStore,
    Platform,
    StoredImage,
    canonical_json,
    digest_bytes,
    mediatypes,
)
from ukedge.vmm import MachineSpec

__all__ = ["Plan", "machine_spec", "memory_message", "plan_run"]

# The guest side of QEMU's user-mode network; the host reaches the guest only through
# forwarded ports, so every instance can use the same addresses.
_GUEST_IP = "10.0.2.15/24"
_GATEWAY = "10.0.2.2"
_DNS = "10.0.2.3"


def memory_message(memory_mib: int, need_mib: int | None) -> str:
    """Why a guest cannot boot with ``memory_mib``: its layers unpack into a RAM root that the
    kernel limits to half the memory it has left."""
    need = f"needs ~{need_mib}M unpacked" if need_mib else "the kernel could not unpack its layers"
    return (
        f"guest memory {memory_mib}M is too small for this image ({need}); set [resources] "
        "memory or -m"
    )


@dataclass(frozen=True)
class Plan:
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
    #: The runtime layer as a shared read-only image (``UnpackedLayers.shared_runtime``), whose
    #: boot archive then stands first in ``initrds``; None: every layer is in the initramfs.
    disk: RuntimeDisk | None = None


def plan_run(
    store: ImageStore,
    layers: UnpackedLayers,
    backend_name: str,
    ref: str,
    what: RunRequest | Instance,
    platform: Platform | None = None,
) -> Plan:
    """The plan of a run of image ``ref`` with ``what``'s overrides on ``backend_name``.

    A multi-platform image runs its manifest of the platform the run asks for, else of
    ``platform`` (the node's); a run that asks for a platform its image lacks is refused.
    """
    asked = what.platform if isinstance(what, RunRequest) else None
    image, manifest = store.manifest(ref, asked or platform)
    config = store.config(manifest)
    if asked is not None and not config.platform.matches(asked):
        raise UsageError(
            f"{image.ref} is a {config.platform} image, not {asked}; build it for {asked} "
            f"(`ukedge build --platform {config.platform},{asked}`) or run it without --platform"
        )
    kernel, initrds, disk = _boot_files(store, layers, manifest)
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
        raise UsageError(memory_message(memory, config.min_memory_mib))
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
                "backend": backend_name,
                # Bumped when the way a snapshot is made changes (zeroed-1: the prewarm boot
                # zeroes what it frees, so a resumed guest never faults those pages in;
                # template-1: its RAM is a file clones map copy-on-write, block ``pc.ram``;
                # rampad-1: the guest's RAM is vmm.RAM_PAD larger, so a snapshot made before
                # is another machine: new keys leave those to the cache's sweep, not an error).
                "snapshot": "zeroed-1,template-1,rampad-1",
                # A guest booted with its runtime on a disk is another machine (another device,
                # another RAM root) than one that unpacked it.
                "runtime": "erofs-1" if disk is not None else "initramfs",
            }
        )
    ).split(":", 1)[1]
    return Plan(image, config, kernel, initrds, launch, hostname, memory, vcpus, key, disk)


def machine_spec(
    plan: Plan,
    machine_id: str,
    workdir: Path,
    ports: Sequence[PortMapping],
    restore_from: Path | None,
    *,
    snapshot_source: bool = False,
    hold: bool = False,
) -> MachineSpec:
    """The spec of one boot of ``plan`` for the instance (or prewarm) directory ``workdir``;
    writes the boot's launch archive there."""
    # The launch archive and this boot's RNG seed, readable by QEMU's user only: the seed
    # must not be on the command line, which every local user sees in ps.
    launch = workdir / "launch.cpio"
    launch.unlink(missing_ok=True)  # an earlier run's may have another mode
    fd = os.open(launch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(plan.launch + seed_archive(os.urandom(32)))
    architecture = plan.config.platform.machine
    return MachineSpec(
        machine_id=machine_id,
        kernel=plan.kernel,
        workdir=machine_paths(workdir).workdir,
        initrds=[*plan.initrds, launch],
        cmdline=guest_cmdline(
            plan.config.boot.cmdline,
            ip=_GUEST_IP,
            gateway=_GATEWAY,
            dns=_DNS,
            clock=time.time(),
            # The host's TSC rate means something only to an x86_64 guest; arm64 reads its
            # timer's rate from the CPU.
            tsc_khz=host_tsc_khz() if architecture == "x86_64" else None,
            snapshot_source=snapshot_source,
            hold=hold,
            ro_mounts=plan.disk.mounts if plan.disk is not None else (),
        ),
        memory_mib=plan.memory_mib,
        vcpus=plan.vcpus,
        template=snapshot_source,
        ports=ports,
        restore_from=restore_from,
        hostname=plan.hostname,
        disk=plan.disk.image if plan.disk is not None else None,
        architecture=architecture,
    )


def _boot_files(
    store: ImageStore, layers: UnpackedLayers, manifest: ImageManifest
) -> tuple[Path, list[Path], RuntimeDisk | None]:
    """The kernel, the initramfs parts and the runtime disk. With ``layers.shared_runtime`` the
    first initrd layer (the runtime, by the build's layer order) is served from an erofs image
    and only its boot archive is unpacked."""
    kernels = [layer for layer in manifest.layers if layer.media_type in mediatypes.KERNEL_TYPES]
    if len(kernels) != 1:
        raise InstanceError(f"image must have exactly one kernel layer, found {len(kernels)}")
    initrds = [layer for layer in manifest.layers if layer.media_type in mediatypes.INITRD_TYPES]
    kernel = layers.unpacked(store, kernels[0])
    disk = None
    if layers.shared_runtime and initrds:
        disk = layers.runtime_disk(store, initrds[0], initrds[1:])
    if disk is not None:
        return kernel, [disk.boot, *(layers.unpacked(store, x) for x in initrds[1:])], disk
    return kernel, [layers.unpacked(store, layer) for layer in initrds], None
