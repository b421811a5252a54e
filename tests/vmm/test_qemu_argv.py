"""QEMU command-line assembly (pure): every flag the backend promises is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.errors import UsageError
from ukedge.ports import PortMapping
from ukedge.vmm import MachinePaths, MachineSpec
from ukedge.vmm._qemu_argv import (
    SANDBOX,
    SANDBOX_RUNAS,
    QemuOptions,
    RamFile,
    RoDisk,
    build_argv,
    guest_mac,
    ram_bytes,
)


def _spec(tmp_path: Path, **kw: object) -> MachineSpec:
    base: dict[str, object] = {
        "machine_id": "m-1",
        "kernel": tmp_path / "vmlinux",
        "workdir": tmp_path / "wd",
        "initrds": [tmp_path / "a.cpio.gz"],
        "cmdline": "console=ttyS0 quiet",
        "memory_mib": 96,
        "vcpus": 2,
        "ports": [
            PortMapping(host_port=18080, guest_port=8080),
            PortMapping(host_port=5353, guest_port=53, host_ip="0.0.0.0", protocol="udp"),
        ],
    }
    base.update(kw)
    return MachineSpec(**base)  # type: ignore[arg-type]


def _argv(
    tmp_path: Path, options: QemuOptions | None = None, accel: str = "tcg", **kw: object
) -> list[str]:
    spec = _spec(tmp_path, **kw)
    paths = MachinePaths(spec.workdir)
    return build_argv(spec, options or QemuOptions(), accel, paths, tmp_path / "initrd.img")  # type: ignore[arg-type]


def _value(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_no_defaults_no_display_sandboxed(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    assert argv[0] == "qemu-system-x86_64"
    for flag in ("-nodefaults", "-no-user-config", "-no-reboot"):
        assert flag in argv
    assert _value(argv, "-display") == ["none"]
    assert _value(argv, "-sandbox") == [SANDBOX]
    assert SANDBOX == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def test_sandbox_can_be_turned_off(tmp_path: Path) -> None:
    assert "-sandbox" not in _argv(tmp_path, QemuOptions(sandbox=False))


def test_pc_boots_through_qboot_with_pci_devices(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    assert _value(argv, "-M") == ["pc"]
    assert _value(argv, "-bios") == ["/usr/share/qemu/qboot.rom"]
    devices = _value(argv, "-device")
    assert f"virtio-net-pci,netdev=net0,mac={guest_mac('m-1')},romfile=" in devices
    assert "virtio-rng-pci,rng=rng0" in devices
    assert any(d.startswith("virtio-serial-pci,") for d in devices)


def test_microvm_uses_mmio_devices_and_no_bios(tmp_path: Path) -> None:
    argv = _argv(tmp_path, QemuOptions(machine="microvm"))
    (machine,) = _value(argv, "-M")
    assert machine.startswith("microvm,")
    assert "x-option-roms=off" in machine
    assert "-bios" not in argv
    devices = _value(argv, "-device")
    assert f"virtio-net-device,netdev=net0,mac={guest_mac('m-1')}" in devices
    assert "virtio-rng-device,rng=rng0" in devices
    assert not any("-pci" in d for d in devices)


def test_tcg_gets_small_translation_cache(tmp_path: Path) -> None:
    argv = _argv(tmp_path, QemuOptions(tb_size_mib=24))
    assert _value(argv, "-accel") == ["tcg,tb-size=24"]
    assert _value(argv, "-cpu") == ["max"]


def test_kvm_uses_host_cpu(tmp_path: Path) -> None:
    argv = _argv(tmp_path, accel="kvm")
    assert _value(argv, "-accel") == ["kvm"]
    assert _value(argv, "-cpu") == ["host"]


def test_boot_inputs_and_sizes(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    assert _value(argv, "-kernel") == [str(tmp_path / "vmlinux")]
    assert _value(argv, "-initrd") == [str(tmp_path / "initrd.img")]
    assert _value(argv, "-append") == ["console=ttyS0 quiet"]
    assert _value(argv, "-m") == ["98312k"]  # 96 MiB and the pad
    assert _value(argv, "-smp") == ["2"]


def test_console_qmp_results_control_live_in_workdir(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    chardevs = _value(_argv(tmp_path), "-chardev")
    assert f"file,id=console,path={wd}/console.log,append=on" in chardevs
    assert f"socket,id=qmp,path={wd}/qmp.sock,server=on,wait=off" in chardevs
    assert f"file,id=results,path={wd}/results.jsonl,append=on" in chardevs
    assert f"socket,id=control,path={wd}/control.sock,server=on,wait=off" in chardevs
    devices = _value(_argv(tmp_path), "-device")
    assert any(d.endswith("chardev=results,name=ukedge.results") for d in devices)
    assert any(d.endswith("chardev=control,name=ukedge.control") for d in devices)


def test_ports_forward_to_loopback_unless_asked(tmp_path: Path) -> None:
    (netdev,) = _value(_argv(tmp_path), "-netdev")
    assert netdev == "user,id=net0,hostfwd=tcp:127.0.0.1:18080-:8080,hostfwd=udp:0.0.0.0:5353-:53"


def test_commas_in_paths_are_escaped(tmp_path: Path) -> None:
    odd = tmp_path / "a,b"
    argv = _argv(odd)
    assert any(f"path={tmp_path}/a,,b/wd/console.log" in c for c in _value(argv, "-chardev"))


def test_no_initrd_and_no_cmdline(tmp_path: Path) -> None:
    spec = _spec(tmp_path, initrds=[], cmdline="")
    argv = build_argv(spec, QemuOptions(), "tcg", MachinePaths(spec.workdir), None)
    assert "-initrd" not in argv
    assert "-append" not in argv


def test_incoming_run_as_and_extra_args(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    options = QemuOptions(run_as="nobody", extra_args=("-trace", "none"))
    argv = build_argv(spec, options, "tcg", MachinePaths(spec.workdir), None, incoming="defer")
    assert _value(argv, "-runas") == ["nobody"]
    assert _value(argv, "-sandbox") == [SANDBOX_RUNAS]
    assert "spawn=deny" in SANDBOX_RUNAS
    assert _value(argv, "-incoming") == ["defer"]
    assert argv[-2:] == ["-trace", "none"]


def test_a_live_migration_target_listens_on_its_unix_socket_and_starts_paused(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, incoming=True)
    paths = MachinePaths(spec.workdir)
    argv = build_argv(spec, QemuOptions(), "tcg", paths, None, incoming=f"unix:{paths.incoming}")
    assert _value(argv, "-incoming") == [f"unix:{paths.incoming}"]
    assert "-S" in argv
    assert paths.incoming.parent == paths.sockets  # private, never a network port
    assert "-S" not in build_argv(_spec(tmp_path), QemuOptions(), "tcg", paths, None)


@pytest.mark.parametrize(
    "kw",
    [{"machine": "q35"}, {"accel": "hvf"}, {"tb_size_mib": 0}, {"tb_size_mib": 100000}],
)
def test_bad_options_are_usage_errors(kw: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        QemuOptions(**kw)  # type: ignore[arg-type]


def test_balloon_with_free_page_reporting(tmp_path: Path) -> None:
    assert not any("balloon" in d for d in _value(_argv(tmp_path), "-device"))
    devices = _value(_argv(tmp_path, QemuOptions(balloon=True)), "-device")
    assert "virtio-balloon-pci,free-page-reporting=on" in devices


def test_initrds_are_joined_at_4_byte_boundaries(tmp_path: Path) -> None:
    from ukedge.vmm.qemu import _concat_initrds

    parts = []
    for i, size in enumerate((5, 8, 3)):
        part = tmp_path / f"p{i}"
        part.write_bytes(bytes([i + 1]) * size)
        parts.append(part)
    joined = _concat_initrds(tuple(parts), tmp_path / "initrd.img")
    assert joined.read_bytes() == b"\1" * 5 + b"\0" * 3 + b"\2" * 8 + b"\3" * 3


def test_each_machine_gets_its_own_mac(tmp_path: Path) -> None:
    macs = set()
    for machine_id in ("m-1", "m-2", "0123456789abcdef0123456789abcdef"):
        nic = next(
            d for d in _value(_argv(tmp_path, machine_id=machine_id), "-device") if "net" in d
        )
        assert f"mac={guest_mac(machine_id)}" in nic.split(",")
        macs.add(guest_mac(machine_id))
    assert len(macs) == 3 and "52:54:00:12:34:56" not in macs
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 0b10 and not first & 0b01, "locally administered, unicast"
    assert guest_mac("m-1") == guest_mac("m-1"), "a restarted machine keeps its MAC"


def _ram_argv(tmp_path: Path, ram: RamFile | None) -> list[str]:
    spec = _spec(tmp_path)
    paths = MachinePaths(spec.workdir)
    return build_argv(spec, QemuOptions(), "tcg", paths, None, ram=ram)


def test_anonymous_ram_unless_a_ram_file_is_given(tmp_path: Path) -> None:
    argv = _ram_argv(tmp_path, None)
    assert not any("memory-backend" in a for a in argv)


@pytest.mark.parametrize(("shared", "share"), [(True, "on"), (False, "off")])
def test_ram_file_backs_the_machine_memory(tmp_path: Path, shared: bool, share: str) -> None:
    """A template source maps its RAM file shared (x-ignore-shared leaves it out of the stream);
    a clone maps the template privately, so its writes never reach the file."""
    argv = _ram_argv(tmp_path, RamFile(tmp_path / "snap,1" / "ram", shared=shared))
    assert _value(argv, "-object")[0] == (
        f"memory-backend-file,id=pc.ram,size=100671488,mem-path={tmp_path}/snap,,1/ram,share={share}"
    )
    assert "memory-backend=pc.ram" in _value(argv, "-machine")
    # The backend's size is the machine's: QEMU refuses a mismatch.
    assert _value(argv, "-m") == ["98312k"]  # 96 MiB and the pad
    assert not any("readonly" in a for a in argv)  # QEMU 7.2 would map it PROT_READ


def test_template_snapshots_are_the_default_and_recorded() -> None:
    assert QemuOptions().template_snapshots is True
    old = QemuOptions(template_snapshots=False)
    assert QemuOptions.from_json(old.to_json()) == old
    legacy = {k: v for k, v in QemuOptions().to_json().items() if k != "template_snapshots"}
    assert QemuOptions.from_json(legacy).template_snapshots is True


def _disk_argv(tmp_path: Path, options: QemuOptions) -> list[str]:
    spec = _spec(tmp_path, disk=tmp_path / "rt.erofs")
    disk = RoDisk(tmp_path / "rt.erofs", 18 << 20)
    return build_argv(spec, options, "tcg", MachinePaths(spec.workdir), None, disk=disk)


def test_no_disk_no_memory_slots(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    assert _value(argv, "-m") == ["98312k"]  # 96 MiB and the pad
    assert not any("pmem" in a or "rodisk" in a for a in argv)


def test_pmem_disk_maps_the_file_shared_and_read_only(tmp_path: Path) -> None:
    argv = _disk_argv(tmp_path, QemuOptions())
    # A memory device: one hotplug slot, room for the image above the RAM.
    assert _value(argv, "-m") == ["98312k,slots=1,maxmem=115M"]
    backend = [o for o in _value(argv, "-object") if o.startswith("memory-backend-file,id=rodisk")]
    assert backend == [
        f"memory-backend-file,id=rodisk,mem-path={tmp_path / 'rt.erofs'},"
        f"size={18 << 20},share=on,readonly=on"
    ]
    assert "virtio-pmem-pci,memdev=rodisk,id=rodisk0,memaddr=0x100000000" in _value(argv, "-device")
    assert "-drive" not in argv
    # The guest keeps its PCI BARs off the disk's range (no ACPI tells it otherwise).
    assert _value(argv, "-append") == ["console=ttyS0 quiet memmap=18M$0x100000000"]


@pytest.mark.parametrize(
    ("options", "device"),
    [
        (QemuOptions(disk_bus="blk"), "virtio-blk-pci,drive=rodisk"),
        # microvm has no PCI for virtio-pmem-pci: its disk goes on virtio-blk whatever is asked.
        (QemuOptions(machine="microvm"), "virtio-blk-device,drive=rodisk"),
    ],
)
def test_blk_disk_is_a_read_only_drive(tmp_path: Path, options: QemuOptions, device: str) -> None:
    argv = _disk_argv(tmp_path, options)
    assert _value(argv, "-m") == ["98312k"]  # 96 MiB and the pad
    assert _value(argv, "-drive") == [
        f"file={tmp_path / 'rt.erofs'},if=none,id=rodisk,format=raw,readonly=on"
    ]
    assert device in _value(argv, "-device")
    assert not any("pmem" in a or "memmap" in a for a in argv)


def test_a_guest_with_ram_above_4_gib_gets_its_disk_on_blk(tmp_path: Path) -> None:
    spec = _spec(tmp_path, disk=tmp_path / "rt.erofs", memory_mib=4096)
    disk = RoDisk(tmp_path / "rt.erofs", 18 << 20)
    argv = build_argv(spec, QemuOptions(), "tcg", MachinePaths(spec.workdir), None, disk=disk)
    assert "virtio-blk-pci,drive=rodisk" in _value(argv, "-device")
    assert _value(argv, "-m") == ["4194312k"]


def test_disk_bus_is_checked_and_recorded() -> None:
    with pytest.raises(UsageError, match="disk_bus"):
        QemuOptions(disk_bus="scsi")  # type: ignore[arg-type]
    options = QemuOptions(disk_bus="blk")
    assert QemuOptions.from_json(options.to_json()) == options
    # A machine recorded before disks existed reads back with the default.
    old = {k: v for k, v in QemuOptions().to_json().items() if k != "disk_bus"}
    assert QemuOptions.from_json(old).disk_bus == "pmem"


def test_spec_disk_round_trips(tmp_path: Path) -> None:
    spec = _spec(tmp_path, disk=str(tmp_path / "rt.erofs"))
    assert spec.disk == tmp_path / "rt.erofs"
    assert MachineSpec.from_json(spec.to_json()) == spec
    assert MachineSpec.from_json(_spec(tmp_path).to_json()).disk is None


def test_aarch64_guest_runs_on_virt_with_virtio_mmio(tmp_path: Path) -> None:
    argv = _argv(tmp_path, architecture="aarch64", cmdline="console=ttyAMA0 quiet")
    assert argv[0] == "qemu-system-aarch64"
    assert _value(argv, "-M") == ["virt,gic-version=3"]
    assert _value(argv, "-cpu") == ["max"]
    assert "-bios" not in argv  # -kernel boots the Image without firmware
    assert "virtio-mmio.force-legacy=false" in _value(argv, "-global")
    devices = _value(argv, "-device")
    assert any(d.startswith("virtio-serial-device,") for d in devices)
    assert any(d.startswith("virtio-net-device,") for d in devices)
    assert "virtio-rng-device,rng=rng0" in devices
    assert not any("-pci" in d or "romfile" in d for d in devices)
    assert _value(argv, "-serial") == ["chardev:console"]  # virt's PL011, ttyAMA0


def test_aarch64_under_kvm_takes_the_hosts_cpu_and_gic(tmp_path: Path) -> None:
    argv = _argv(tmp_path, accel="kvm", architecture="aarch64")
    assert _value(argv, "-M") == ["virt,gic-version=host"]
    assert _value(argv, "-cpu") == ["host"]
    assert _value(argv, "-accel") == ["kvm"]


def test_aarch64_binary_follows_a_configured_one(tmp_path: Path) -> None:
    options = QemuOptions(binary="/opt/qemu/bin/qemu-system-x86_64")
    assert (
        _argv(tmp_path, options, architecture="aarch64")[0] == "/opt/qemu/bin/qemu-system-aarch64"
    )
    assert _argv(tmp_path, options)[0] == "/opt/qemu/bin/qemu-system-x86_64"


def test_aarch64_ram_file_takes_virts_ram_block_name(tmp_path: Path) -> None:
    spec = _spec(tmp_path, architecture="aarch64")
    ram = RamFile(tmp_path / "ram", shared=True)
    argv = build_argv(spec, QemuOptions(), "tcg", MachinePaths(spec.workdir), None, ram=ram)
    assert any(
        o.startswith("memory-backend-file,id=mach-virt.ram,") for o in _value(argv, "-object")
    )
    assert "memory-backend=mach-virt.ram" in _value(argv, "-machine")


def test_spec_architecture_is_a_machine_name(tmp_path: Path) -> None:
    assert MachineSpec.from_json(
        _spec(tmp_path, architecture="aarch64").to_json()
    ).architecture == ("aarch64")
    with pytest.raises(UsageError, match="machine name"):
        _spec(tmp_path, architecture="arm64")
    with pytest.raises(UsageError, match="riscv64"):
        _spec(tmp_path, architecture="riscv64")


def test_an_aarch64_guest_gets_its_disk_on_blk(tmp_path: Path) -> None:
    # virt's devices are on virtio-mmio here: no PCI for virtio-pmem-pci, and no e820 memmap.
    spec = _spec(tmp_path, disk=tmp_path / "rt.erofs", architecture="aarch64")
    disk = RoDisk(tmp_path / "rt.erofs", 18 << 20)
    argv = build_argv(spec, QemuOptions(), "tcg", MachinePaths(spec.workdir), None, disk=disk)
    assert "virtio-blk-device,drive=rodisk" in _value(argv, "-device")
    assert not any("pmem" in a or "memmap" in a for a in argv)


@pytest.mark.parametrize("mib", [16, 64, 96, 2816, 4096])
def test_guest_ram_is_never_a_multiple_of_64_pages(tmp_path: Path, mib: int) -> None:
    """QEMU before 9.0 tracks TCG guest writes during a live migration only for a RAM block
    of another size (RAM_PAD); the size stays a multiple of QEMU's 8 KiB RAM alignment."""
    size = ram_bytes(_spec(tmp_path, memory_mib=mib))
    assert size % (256 << 10) != 0 and size % (8 << 10) == 0 and size > mib << 20
