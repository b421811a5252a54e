"""A boot meant to be snapshotted (guest_cmdline(snapshot_source=True)) leaves the pages its
kernel freed out of the snapshot: the guest zeroes them, and zero pages cost a restore nothing."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from conformance import vmm as conformance
from ukedge import vmm
from ukedge.build.guest import host_tsc_khz
from ukedge.guest import CpioArchive, guest_cmdline
from ukedge.vmm import MachineSpec

PADDING = 8 << 20


@pytest.mark.vm
def test_snapshot_source_boot_saves_freed_initramfs_as_zero_pages(tmp_path: Path) -> None:
    (tmp_path / "guest").mkdir()
    guest = conformance._build_guest(tmp_path / "guest")
    # 8 MiB of incompressible data in the initramfs: the unpacked file stays in the guest's
    # RAM either way; the archive copy is freed once unpacked (and poisoned, unless zeroed).
    archive = CpioArchive()
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(PADDING))
    archive.add_file("padding.bin", blob, 0o644)
    buf = io.BytesIO()
    archive.write(buf)
    padding = tmp_path / "padding.cpio"
    padding.write_bytes(buf.getvalue())

    backend = vmm.create("qemu")
    sizes: dict[bool, int] = {}
    for source in (False, True):
        base = guest.spec(f"src{int(source)}", "echo", "7777")
        cmdline = guest_cmdline(
            guest.cmdline,
            ip=None,
            gateway=None,
            dns=None,
            tsc_khz=host_tsc_khz(),
            snapshot_source=source,
        )
        spec = MachineSpec.from_json(
            {
                **base.to_json(),
                "cmdline": cmdline,
                "initrds": [str(padding), *(str(p) for p in base.initrds)],
            }
        )
        machine = backend.start(spec)
        try:
            conformance.wait_for(
                conformance.console_has(machine, "conformance app listening"),
                conformance.BOOT_TIMEOUT,
                "the app",
            )
            machine.snapshot(tmp_path / f"snap{int(source)}")
        finally:
            machine.kill()
        sizes[source] = (tmp_path / f"snap{int(source)}" / "vmstate").stat().st_size
    assert sizes[False] - sizes[True] > PADDING, sizes
