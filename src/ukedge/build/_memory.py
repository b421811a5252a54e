"""How much guest memory an image needs to boot, from what the kernel really does with it.

Linux unpacks the initramfs into a tmpfs root whose size limit is half the RAM it sees when it
mounts that root; at that moment the kernel image and the still compressed initrds are not
counted as RAM. A guest whose unpacked files do not fit under that limit fails at boot with
"Initramfs unpacking failed: write error" and a missing launch file. So (measured under TCG
with the minimal profile; docs/image-format.md has the figures)::

    reserved = kernel image + compressed initrds + KERNEL_OVERHEAD + 2M per 128M of memory
    limit    = (memory - reserved) / 2          must hold the unpacked files (page-rounded)
    minimum  = reserved + 2 * (unpacked + MARGIN)
    default  = max(64M, reserved + 2 * (unpacked + HEADROOM)), rounded up to 8M
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BootMemory", "boot_memory", "root_limit"]

_MIB = 1 << 20
#: RAM the kernel keeps beyond its own image and the compressed initrds when it mounts the
#: root: a fixed part plus the page structs of each 128 MiB memory section. Measured: 32400 KiB
#: lost at 72M to 128M, 34640 KiB at 256M, with a 15862 KiB kernel and 8449 KiB of initrds,
#: leaving 8089 KiB (one section) and 10329 KiB (two).
KERNEL_OVERHEAD = 6400 << 10
SECTION = 128 * _MIB
SECTION_OVERHEAD = 2 * _MIB
#: Room left in the root after unpacking at the minimum: the launch archive, /tmp files of a
#: short start.
MARGIN = 1 * _MIB
#: Room the default adds for the app's own files in the root (/tmp, its results spool); twice
#: this in RAM, since the root's limit is half of it.
HEADROOM = 4 * _MIB
#: The smallest default: below it an app with any working set of its own is tight.
DEFAULT_FLOOR_MIB = 64


@dataclass(frozen=True)
class BootMemory:
    """``minimum_mib``: the guest cannot unpack its root with less; ``default_mib``: what an
    image without ``[resources] memory`` gets."""

    minimum_mib: int
    default_mib: int
    unpacked: int
    reserved: int


def boot_memory(kernel_size: int, initrd_sizes: list[int], unpacked: int) -> BootMemory:
    """``kernel_size``: the uncompressed kernel; ``initrd_sizes``: the compressed initrds as the
    guest gets them; ``unpacked``: their files' tmpfs size (``CpioArchive.rootfs_size``)."""
    fixed = kernel_size + sum(initrd_sizes) + KERNEL_OVERHEAD
    minimum = _solve(fixed, 2 * (unpacked + MARGIN))
    wanted = _solve(fixed, 2 * (unpacked + HEADROOM))
    default = max(DEFAULT_FLOOR_MIB, -(-wanted // 8) * 8)
    return BootMemory(minimum, default, unpacked, fixed + SECTION_OVERHEAD)


def root_limit(memory_mib: int, kernel_size: int, initrd_sizes: list[int]) -> int:
    """The modelled size limit of the guest's tmpfs root, in bytes, with ``memory_mib`` of RAM."""
    memory = memory_mib * _MIB
    sections = -(-memory // SECTION)
    fixed = kernel_size + sum(initrd_sizes) + KERNEL_OVERHEAD + sections * SECTION_OVERHEAD
    return max(0, (memory - fixed) // 2)


def _solve(fixed: int, root: int) -> int:
    """The least whole MiB ``m`` with ``m >= fixed + sections(m) * SECTION_OVERHEAD + root``."""
    sections = 1
    while True:
        need = fixed + sections * SECTION_OVERHEAD + root
        if need <= sections * SECTION:
            return -(-need // _MIB)
        sections = -(-need // SECTION)
