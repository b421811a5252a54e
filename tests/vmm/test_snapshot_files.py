"""Snapshot template files (pure file handling, no QEMU): the RAM file a template's clones map
is the source's, linked when the source ends and copied when it runs on, and a RAM file of the
wrong size is refused before QEMU would fail on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ukedge.errors import UsageError
from ukedge.vmm import MachineSpec, _snapshot
from ukedge.vmm._qemu_argv import QemuOptions, RamFile


def test_a_stream_snapshot_has_no_template_ram(tmp_path: Path) -> None:
    assert _snapshot.template_ram(tmp_path) is None
    (tmp_path / "ram").write_bytes(b"\0")
    assert _snapshot.template_ram(tmp_path) == RamFile(tmp_path / "ram", shared=False)


@pytest.mark.parametrize("resume", [False, True])
def test_the_source_ram_becomes_the_template(tmp_path: Path, resume: bool) -> None:
    source = tmp_path / "ram.src"
    source.write_bytes(b"guest pages")
    target = tmp_path / "snap" / "ram"
    target.parent.mkdir()
    _snapshot._keep_ram(source, target, copy=resume)
    assert target.read_bytes() == b"guest pages"
    # A source that resumes writes on: the template must be another inode, not a link.
    assert source.samefile(target) is not resume
    source.write_bytes(b"written after the save")
    assert target.read_bytes() == (b"guest pages" if resume else b"written after the save")


def test_a_ram_file_of_another_size_is_refused(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"k")
    snap = tmp_path / "snap"
    snap.mkdir()
    spec = MachineSpec("m", kernel, tmp_path / "wd", memory_mib=64, restore_from=snap)
    fingerprint = _snapshot._fingerprint(spec, QemuOptions(), "tcg")
    (snap / "snapshot.json").write_text(json.dumps({"version": 1, "fingerprint": fingerprint}))
    (snap / "vmstate").write_bytes(b"devices")
    with (snap / "ram").open("wb") as fh:
        fh.truncate(32 << 20)
    with pytest.raises(
        UsageError, match=r"RAM file of 33554432 bytes, not the 67117056 of its machine \(64 MiB"
    ):
        _snapshot.check_compatible(spec, QemuOptions(), "tcg")
