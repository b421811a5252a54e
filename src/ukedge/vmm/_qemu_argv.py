"""QEMU command-line assembly: a pure function from a spec and backend options to argv.

Kept free of I/O so every flag choice is unit-tested without starting QEMU.

An aarch64 guest (``MachineSpec.architecture``) runs on ``qemu-system-aarch64 -M virt``: the
kernel layer is an arm64 ``Image`` that ``-kernel`` boots without firmware (QEMU hands it a
device tree), the console is ``virt``'s PL011 UART (ttyAMA0), and the virtio devices sit on
the virtio-mmio transports ``virt`` declares in that device tree, so the guest enumerates no
PCI bus. GICv3 (more than 8 vCPUs; the host's own under KVM), ``-cpu max`` under TCG.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ukedge.errors import UsageError
from ukedge.guest import CONTROL_PORT, RESULTS_PORT
from ukedge.vmm._paths import MachinePaths
from ukedge.vmm.base import MachineSpec

#: The seccomp policy every machine runs under (DESIGN.md, issue 4 item 7).
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
#: With ``-runas`` QEMU itself calls setuid after the filter is installed, so set*id must stay
#: allowed; once QEMU runs unprivileged there is nothing to elevate to, and spawn=deny still
#: keeps it from executing set-uid programs.
SANDBOX_RUNAS = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"

MachineType = Literal["pc", "microvm"]
Accel = Literal["kvm", "tcg"]
DiskBus = Literal["pmem", "blk"]


@dataclass(frozen=True, slots=True)
class QemuOptions:
    """Backend-wide settings of the QEMU backend (``vmm.create("qemu", options)``)."""

    binary: str = "qemu-system-x86_64"
    #: ``pc`` boots the PVH vmlinux through qboot; ``microvm`` uses virtio-mmio, no PCI.
    machine: MachineType = "pc"
    #: ``auto`` runs the accelerator probe (cached); ``kvm`` or ``tcg`` force one.
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    #: TCG translation-cache size. QEMU's default (1 GiB in system mode) lets an idle guest's
    #: QEMU grow with every translated block. Measured here (hello-c, 64 MiB guest, no THP,
    #: boot-to-exit / idle RSS): 12 MiB 0.91 s / 80 MiB; 16 MiB 0.89 s / 85 MiB; 24 MiB
    #: 0.81 s / 90 MiB; 32 MiB 0.79 s / 90 MiB (a boot translates ~21 MiB). Boot time is the
    #: headline, so 32; a host packing many idle machines may trade boot time for RSS.
    tb_size_mib: int = 32
    #: CPU model; None picks ``host`` under KVM and ``max`` under TCG.
    cpu: str | None = None
    #: Firmware for ``pc``: qboot jumps straight to the kernel (SeaBIOS costs ~100 ms).
    bios: Path = field(default_factory=lambda: Path("/usr/share/qemu/qboot.rom"))
    sandbox: bool = True
    #: Start QEMU without transparent huge pages: guest RAM and the TCG buffer then cost
    #: what the guest touches, not whole 2 MiB pages.
    no_thp: bool = True
    #: ``start`` returns only once QEMU runs the guest (a QMP round trip, in parallel with the
    #: boot), so a refused configuration such as a busy host port is start's error.
    confirm_start: bool = True
    #: Add a virtio-balloon with free page reporting: a guest kernel with
    #: CONFIG_PAGE_REPORTING hands freed pages back, so an idle machine's RSS shrinks.
    balloon: bool = False
    #: Snapshots of machines started with ``MachineSpec.template`` are copy-on-write
    #: templates: the source keeps its RAM in a shared file that becomes the snapshot's RAM
    #: file, the state stream carries devices only (``x-ignore-shared``), and every clone maps
    #: the RAM file privately, so the pages no clone changed are one copy in the host's page
    #: cache. False keeps the older path: RAM in the stream, loaded into each clone's own RAM.
    #: Ignored with ``balloon``: QEMU before 8.2 (7.2 here) discards reported pages of a
    #: private file mapping by punching holes into the file, zeroing them under every clone.
    template_snapshots: bool = True
    #: How a machine's read-only disk (``MachineSpec.disk``, the shared runtime image) is
    #: attached: ``pmem`` maps the file into guest memory (virtio-pmem; the guest mounts it with
    #: DAX, so its page cache holds no copy and every machine shares the host's page cache of
    #: the file); ``blk`` is virtio-blk, where DAX cannot be had (``microvm`` has no PCI for
    #: virtio-pmem-pci, so it always uses ``blk``).
    disk_bus: DiskBus = "pmem"
    #: Unprivileged user QEMU switches to after start-up (when the caller is root).
    run_as: str | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.machine not in ("pc", "microvm"):
            raise UsageError(f"QEMU machine type must be pc or microvm, got {self.machine!r}")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise UsageError(f"accelerator must be auto, kvm or tcg, got {self.accel!r}")
        if self.disk_bus not in ("pmem", "blk"):
            raise UsageError(f"disk_bus must be pmem or blk, got {self.disk_bus!r}")
        if not isinstance(self.tb_size_mib, int) or not 1 <= self.tb_size_mib <= 4096:
            raise UsageError(f"tb_size_mib must be 1-4096, got {self.tb_size_mib!r}")
        object.__setattr__(self, "bios", Path(self.bios))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    def to_json(self) -> dict[str, Any]:
        return {
            "binary": self.binary,
            "machine": self.machine,
            "accel": self.accel,
            "tb_size_mib": self.tb_size_mib,
            "cpu": self.cpu,
            "bios": str(self.bios),
            "sandbox": self.sandbox,
            "confirm_start": self.confirm_start,
            "no_thp": self.no_thp,
            "balloon": self.balloon,
            "template_snapshots": self.template_snapshots,
            "disk_bus": self.disk_bus,
            "run_as": self.run_as,
            "extra_args": list(self.extra_args),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QemuOptions:
        # ``disk_bus`` is newer than some recorded machines: they had no disk.
        return cls(
            **{
                "disk_bus": "pmem",
                **data,
                "bios": Path(data["bios"]),
                "extra_args": tuple(data["extra_args"]),
            }
        )


def guest_mac(machine_id: str) -> str:
    """The guest's MAC address: locally administered, unicast, and derived from the machine id,
    so machines differ (QEMU's default, 52:54:00:12:34:56, is every guest's) and a restarted
    machine keeps its own."""
    digest = bytearray(hashlib.sha256(b"ukedge-mac\0" + machine_id.encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def machine_binary(options: QemuOptions, architecture: str) -> str:
    """The QEMU binary for guests of ``architecture``: ``options.binary`` (x86_64's) with the
    architecture swapped in its name, so a configured directory or wrapper carries over."""
    if architecture == "x86_64":
        return options.binary
    path = Path(options.binary)
    return str(path.with_name(path.name.replace("x86_64", architecture)))


#: Guest RAM is this much more than its ``memory_mib``. QEMU before 9.0 syncs a RAM block whose
#: size is a multiple of 256 KiB (64 pages) on a fast path that leaves TCG's TLB stale: the
#: guest's writes after a dirty-bitmap sync go unrecorded, so a live move whose pre-copy takes
#: several passes (or switches to post-copy) resumes the guest with some of its pages from an
#: earlier pass (QEMU's "physmem: Fix migration dirty bitmap coherency with TCG memory
#: access"). Any other size takes the per-page path, which re-arms the TLB.
RAM_PAD = 8 << 10


def ram_bytes(spec: MachineSpec) -> int:
    """The guest's RAM block size: ``memory_mib`` plus :data:`RAM_PAD`."""
    return (spec.memory_mib << 20) + RAM_PAD


def ram_id(spec: MachineSpec) -> str:
    """The RAM block's name when ``-m`` makes the RAM, which a RAM file must take so that a
    migration stream of either kind restores into it."""
    return "mach-virt.ram" if spec.architecture == "aarch64" else "pc.ram"


def _hostfwd(spec: MachineSpec) -> str:
    return "".join(
        f",hostfwd={p.protocol}:{p.host_ip}:{p.host_port}-:{p.guest_port}" for p in spec.ports
    )


def _opt(value: str) -> str:
    """Escape a value for QEMU's key=value option syntax (commas are doubled)."""
    return value.replace(",", ",,")


@dataclass(frozen=True, slots=True)
class RamFile:
    """Guest RAM backed by a file instead of anonymous memory.

    ``shared`` (a snapshot template's source) maps it MAP_SHARED: the guest writes into the
    file, and QEMU counts the RAM as shared, which ``x-ignore-shared`` leaves out of the
    migration stream. Not shared (a clone) maps it MAP_PRIVATE: reads come from the file's
    pages in the host page cache, which every clone shares, and a write copies just that page
    into the clone's own memory; the file is never written.
    """

    path: Path
    shared: bool


@dataclass(frozen=True, slots=True)
class RoDisk:
    """A read-only disk image and its size in bytes (a multiple of 2 MiB, as virtio-pmem's
    memory backend needs its size given)."""

    path: Path
    size: int


#: Where a virtio-pmem disk sits in guest physical memory: the start of ``pc``'s device memory
#: area, right above 4 GiB while the RAM fits below (``_PMEM_MAX_RAM_MIB``).
PMEM_ADDR = 1 << 32
#: Larger guests have RAM above 4 GiB, which moves the device memory area: they use ``blk``.
_PMEM_MAX_RAM_MIB = 2816


def disk_bus(options: QemuOptions, spec: MachineSpec) -> DiskBus:
    """The bus a read-only disk goes on: ``microvm`` and aarch64's ``virt`` (on virtio-mmio
    here) have no PCI for virtio-pmem-pci, and a guest with RAM above 4 GiB has its device
    memory elsewhere than :data:`PMEM_ADDR`."""
    if (
        options.machine == "microvm"
        or spec.architecture == "aarch64"
        or spec.memory_mib > _PMEM_MAX_RAM_MIB
    ):
        return "blk"
    return options.disk_bus


def build_argv(
    spec: MachineSpec,
    options: QemuOptions,
    accel: Accel,
    paths: MachinePaths,
    initrd: Path | None,
    *,
    incoming: str | None = None,
    ram: RamFile | None = None,
    disk: RoDisk | None = None,
) -> list[str]:
    """The full QEMU argv for ``spec``; ``initrd`` is the (already concatenated) initramfs and
    ``disk`` the machine's read-only disk (``spec.disk`` with its size)."""
    arm = spec.architecture == "aarch64"
    mmio = arm or options.machine == "microvm"
    bus = "device" if mmio else "pci"
    argv = [
        machine_binary(options, spec.architecture),
        "-name",
        _opt(spec.machine_id),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        # The guest powers off when its app ends; a reboot request (panic, triple fault) ends
        # the machine too instead of booting the app again behind the caller's back.
        "-no-reboot",
    ]
    if options.sandbox:
        argv += ["-sandbox", SANDBOX_RUNAS if options.run_as else SANDBOX]
    if arm:
        argv += ["-M", f"virt,gic-version={'host' if accel == 'kvm' else '3'}"]
        # Virtio 1.0 on virt's mmio transports, as virtio-pci is on x86 (QEMU's mmio default
        # is the legacy interface).
        argv += ["-global", "virtio-mmio.force-legacy=false"]
    elif mmio:
        # No option ROMs, RTC or ACPI (QEMU then lists the virtio-mmio devices on the kernel
        # command line). The PIT stays: without it the kernel cannot calibrate the TSC.
        argv += ["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off"]
    else:
        argv += ["-M", "pc", "-bios", str(options.bios)]
    if accel == "tcg":
        argv += ["-accel", f"tcg,tb-size={options.tb_size_mib}"]
    else:
        argv += ["-accel", "kvm"]
    argv += ["-cpu", options.cpu or ("host" if accel == "kvm" else "max")]
    pmem = disk is not None and disk_bus(options, spec) == "pmem"
    if disk is not None and pmem:
        # virtio-pmem is a memory device: it needs a hotplug slot and room above the RAM.
        maxmem = spec.memory_mib + 1 + -(-disk.size // (1 << 20))  # (+1: the pad)
        argv += ["-m", f"{ram_bytes(spec) >> 10}k,slots=1,maxmem={maxmem}M"]
    else:
        argv += ["-m", f"{ram_bytes(spec) >> 10}k"]
    argv += ["-smp", str(spec.vcpus)]
    if ram is not None:
        # QEMU 7.2 opens the file read-write even for share=off (``readonly=on`` would map it
        # read-only, and the guest could not write its private copies); MAP_PRIVATE is what
        # keeps a clone's writes out of it.
        # The id ``pc.ram`` is the RAM block's name when ``-m`` makes the RAM, so a clone's
        # migration stream (a move to another node) restores into a machine without a RAM file.
        share = "on" if ram.shared else "off"
        argv += [
            "-object",
            f"memory-backend-file,id={ram_id(spec)},size={ram_bytes(spec)},"
            f"mem-path={_opt(str(ram.path))},share={share}",
            "-machine",
            f"memory-backend={ram_id(spec)}",
        ]
    argv += ["-kernel", str(spec.kernel)]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    cmdline = spec.cmdline
    if disk is not None and pmem:
        # Without ACPI the guest kernel does not know the device memory area and may place a
        # PCI device's 64-bit BAR on top of the disk (the virtio-pmem device's own BAR then
        # reads back as the image, and its probe fails): reserve the disk's range in the e820.
        size_mib = -(-disk.size // (1 << 20))
        cmdline = f"{cmdline} memmap={size_mib}M${PMEM_ADDR:#x}".strip()
    if cmdline:
        argv += ["-append", cmdline]
    # Serial console to a file: the logs, and the guest's exit line.
    argv += [
        "-chardev",
        f"file,id=console,path={_opt(str(paths.console))},append=on",
        "-serial",
        "chardev:console",
    ]
    # QMP, never waited for: nothing on the boot path connects to it.
    argv += [
        "-chardev",
        f"socket,id=qmp,path={_opt(str(paths.qmp))},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
    ]
    # Results (guest → host file) and control (host → guest "stop") virtio-serial ports.
    argv += [
        "-device",
        f"virtio-serial-{bus},id=vser0,max_ports=3",
        "-chardev",
        f"file,id=results,path={_opt(str(paths.results))},append=on",
        "-device",
        f"virtserialport,bus=vser0.0,nr=1,chardev=results,name={RESULTS_PORT}",
        "-chardev",
        f"socket,id=control,path={_opt(str(paths.control))},server=on,wait=off",
        "-device",
        f"virtserialport,bus=vser0.0,nr=2,chardev=control,name={CONTROL_PORT}",
    ]
    # User-mode networking: no host privileges or bridges needed; ports via hostfwd.
    net = f"virtio-net-{bus},netdev=net0,mac={guest_mac(spec.machine_id)}"
    if not mmio:
        net += ",romfile="  # no iPXE option ROM: nothing network-boots here.
    argv += ["-netdev", f"user,id=net0{_hostfwd(spec)}", "-device", net]
    argv += [
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        f"virtio-rng-{bus},rng=rng0",
    ]
    if disk is not None and pmem:
        # share=on: every machine maps the host's pages of the file (one copy in its page
        # cache); readonly=on: QEMU opens and maps it read-only, so no guest can write it. QEMU
        # does not migrate a virtio-pmem backend's memory (neither snapshots nor moves carry
        # it): a restored or incoming machine maps its own copy of the same image.
        argv += [
            "-object",
            f"memory-backend-file,id=rodisk,mem-path={_opt(str(disk.path))},"
            f"size={disk.size},share=on,readonly=on",
            "-device",
            f"virtio-pmem-pci,memdev=rodisk,id=rodisk0,memaddr={PMEM_ADDR:#x}",
        ]
    elif disk is not None:
        argv += [
            "-drive",
            f"file={_opt(str(disk.path))},if=none,id=rodisk,format=raw,readonly=on",
            "-device",
            f"virtio-blk-{bus},drive=rodisk",
        ]
    if options.balloon:
        argv += ["-device", f"virtio-balloon-{bus},free-page-reporting=on"]
    if options.run_as:
        argv += ["-runas", options.run_as]
    if incoming:
        argv += ["-incoming", incoming]
    if spec.incoming:
        argv += ["-S"]  # loaded paused: the receiver resumes it once it has taken over
    argv += list(options.extra_args)
    return argv
