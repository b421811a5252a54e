"""The guest memory model against what the minimal kernel did under QEMU (docs/image-format.md)."""

from __future__ import annotations

import pytest

from ukedge.build._memory import DEFAULT_FLOOR_MIB, MARGIN, boot_memory, root_limit
from ukedge.guest import CpioArchive

#: The measured image: minimal 6.1 kernel (vmlinux 16242608 B), python runtime and a one-file
#: app layer (8651222 + 914 B compressed), 16992 KiB in the root once unpacked.
KERNEL = 16_242_608
INITRDS = [8_651_222, 914]
UNPACKED = 16_992 << 10


@pytest.mark.parametrize(
    ("memory_mib", "measured_kib"),
    [(72, 20_664), (80, 24_760), (96, 32_952), (128, 49_336), (256, 113_752)],
)
def test_root_limit_matches_the_measured_tmpfs_size(memory_mib: int, measured_kib: int) -> None:
    modelled = root_limit(memory_mib, KERNEL, INITRDS) >> 10
    assert measured_kib - 1024 <= modelled <= measured_kib  # never more than the kernel gives


def test_the_measured_image_fails_at_64m_and_gets_a_minimum_and_default_that_boot() -> None:
    need = boot_memory(KERNEL, INITRDS, UNPACKED)
    # It failed at 64M ("Initramfs unpacking failed: write error") and booted at 72M and 80M.
    assert root_limit(64, KERNEL, INITRDS) < UNPACKED
    assert 64 < need.minimum_mib <= 72
    assert root_limit(need.minimum_mib, KERNEL, INITRDS) >= UNPACKED + MARGIN
    assert root_limit(need.minimum_mib - 1, KERNEL, INITRDS) < UNPACKED + MARGIN + (1 << 20)
    assert need.default_mib == 80


def test_small_images_get_the_floor_and_big_ones_pay_for_more_memory_sections() -> None:
    assert boot_memory(KERNEL, [300_000], 400_000).default_mib == DEFAULT_FLOOR_MIB
    big = 120 << 20
    need = boot_memory(KERNEL, [60 << 20], big)
    assert need.minimum_mib > 256
    assert root_limit(need.minimum_mib, KERNEL, [60 << 20]) >= big + MARGIN
    assert need.default_mib % 8 == 0 and need.default_mib > need.minimum_mib


def test_rootfs_size_counts_whole_pages_and_long_symlinks() -> None:
    archive = CpioArchive()
    archive.add_file("a", b"x")  # one page
    archive.add_file("b", b"y" * 4097)  # two pages
    archive.add_file("empty", b"")  # none
    archive.add_symlink("short", "t" * 127)  # kept in the inode
    archive.add_symlink("long", "t" * 128)  # a page
    archive.add_char_device("dev/console", 5, 1)
    assert archive.rootfs_size() == 4 * 4096
