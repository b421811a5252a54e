"""bench/density.py's split of a QEMU's RSS by mapping, on a smaps text of known shape."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

SMAPS = """\
55d0c0000000-55d0c0400000 r--p 00000000 fe:00 1 /usr/bin/qemu-system-x86_64
Size:               4096 kB
Rss:                4000 kB
Pss:                1000 kB
55d0c1000000-55d0c1200000 rw-p 00000000 00:00 0                          [heap]
Rss:                 512 kB
7f0000000000-7f0002000000 rwxp 00000000 00:00 0
Rss:                2048 kB
7f0002000000-7f0002100000 rw-p 00000000 00:00 0
Rss:                 100 kB
7f0003000000-7f0009000000 rw-p 00000000 fe:00 2 /tmp/inst/snapshots/abc/ram
Rss:                1024 kB
VmFlags: rd wr mr mw me ac sd
7f000a000000-7f000a100000 r-xp 00000000 fe:00 3 /opt/lib/libfoo.so.1
Rss:                  64 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
"""


@pytest.fixture(scope="module")
def density() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("density")
    finally:
        sys.path.remove(str(BENCH))


def test_rss_is_split_by_kind_of_mapping(density: ModuleType) -> None:
    split = density._smaps_split(SMAPS, "/usr/bin/qemu-system-x86_64")
    assert split == {
        "qemu+libs": (4000 + 64) * 1024,  # the binary under /usr and a .so anywhere
        "files": 1024 * 1024,  # a template's RAM file
        "tcg": 2048 * 1024,  # the one anonymous executable mapping
        "heap": 512 * 1024,
        "anon": (100 + 16) * 1024,  # other anonymous memory, stacks included
    }
    assert sum(split.values()) == sum(
        int(line.split()[1]) * 1024 for line in SMAPS.splitlines() if line.startswith("Rss:")
    )


def test_qemus_own_binary_counts_as_qemu_wherever_it_is_installed(density: ModuleType) -> None:
    slim = "/root/.local/share/ukedge/cache/qemu-slim/bin/qemu-system-x86_64"
    moved = SMAPS.replace("/usr/bin/qemu-system-x86_64", slim)
    assert density._smaps_split(moved, slim) == density._smaps_split(
        SMAPS, "/usr/bin/qemu-system-x86_64"
    )
    # Another process's binary there would be a file like any other.
    assert density._smaps_split(moved, "/usr/bin/qemu-system-x86_64")["files"] == (
        (1024 + 4000) * 1024
    )


def test_disk_counts_allocated_blocks(density: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "console.log").write_bytes(b"x" * 10000)
    (tmp_path / "sparse").touch()
    with (tmp_path / "sparse").open("r+b") as fh:
        fh.truncate(1 << 20)  # a hole: no blocks
    assert 10000 <= density._disk(tmp_path) < 64 * 1024
