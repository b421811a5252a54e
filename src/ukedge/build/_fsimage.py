"""A runtime layer as a read-only erofs image: the shared-runtime boot path.

An initrd layer is unpacked by the guest kernel into the guest's RAM at every boot. The host can
instead serve the layer's bulky directories from an erofs image (virtio-pmem with DAX, or
virtio-blk): every guest of that runtime on the node then maps the same host file, and the guest
keeps only a small *boot archive* in its RAM root, the layer's entries outside those directories
(the init, the skeleton it mounts on, the empty mount points). Init mounts the image and binds
each directory over its mount point (``ukedge.ro=`` on the kernel command line).

Which directories come from the image depends on the image's other layers: a directory is taken
whole only when no other layer puts anything beneath it (an app's packages go under
``/usr/local``, so ``/usr`` then splits into ``/usr/bin`` and ``/usr/lib``). The erofs image
itself holds the whole layer (devices aside) and depends on the layer alone, so one file per
runtime digest serves every image built on that runtime.

Both files are functions of their inputs: mkfs.erofs runs with a fixed timestamp and UUID, all
files owned by root, no xattrs; the boot archive is written by the reproducible cpio writer.
Files are uncompressed and not tail-packed (``-E noinline_data``): erofs maps only such files
with DAX, the rest would be copied into the guest's page cache. The image is padded to a
multiple of 2 MiB, the granularity the guest kernel maps device memory in.

Crashes: both files are written under temporary names and renamed into place by the caller.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ukedge.errors import BuildError
from ukedge.guest import CpioArchive

__all__ = [
    "MKFS_EROFS",
    "CpioMember",
    "read_cpio",
    "runtime_boot_archive",
    "runtime_erofs",
    "runtime_mounts",
]

MKFS_EROFS = "mkfs.erofs"
#: Every image gets this UUID, so equal layers give equal bytes.
_UUID = "756b6564-6765-4000-8000-72756e74696d"
#: The guest maps device memory in 2 MiB subsections; the image is padded to a multiple.
_ALIGN = 2 << 20
_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"
#: Characters a mount point may use: they go on the kernel command line, comma-separated.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")


@dataclass(frozen=True)
class CpioMember:
    """One entry of a newc archive as the kernel would unpack it (path without leading ``/``)."""

    path: str
    mode: int
    data: bytes
    rdev: tuple[int, int] = (0, 0)


def read_cpio(path: Path) -> list[CpioMember]:
    """Every member of an uncompressed newc archive (concatenated archives too), in order."""
    raw = path.read_bytes()
    return list(_members(raw, str(path)))


def _members(raw: bytes, where: str) -> Iterator[CpioMember]:
    pos = 0
    while pos < len(raw):
        if raw[pos : pos + 4] == b"\0\0\0\0":  # padding between concatenated archives
            pos += 4
            continue
        if raw[pos : pos + 6] != _MAGIC or pos + 110 > len(raw):
            raise BuildError(f"{where}: no newc cpio header at offset {pos}")
        try:
            fields = [int(raw[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise BuildError(f"{where}: corrupt cpio header at offset {pos}") from None
        mode, filesize, rmajor, rminor, namesize = (
            fields[1],
            fields[6],
            fields[9],
            fields[10],
            fields[11],
        )
        name_start = pos + 110
        name = raw[name_start : name_start + namesize - 1].decode("utf-8", "surrogateescape")
        body = name_start + namesize + (-(110 + namesize) % 4)
        end = body + filesize
        if end > len(raw):
            raise BuildError(f"{where}: member {name!r} runs past the end of the archive")
        pos = end + (-filesize % 4)
        if name == _TRAILER:
            continue
        clean = str(PurePosixPath("/" + name.lstrip("/")))[1:]
        if ".." in PurePosixPath(clean).parts:
            raise BuildError(f"{where}: member {name!r} leaves the archive's root")
        if clean:
            yield CpioMember(clean, mode, raw[body:end], (rmajor, rminor))


def runtime_mounts(runtime: Sequence[CpioMember], others: Iterable[str]) -> tuple[str, ...]:
    """The directories of ``runtime`` the guest takes from the image: the fewest, highest
    directories that hold regular files of the runtime and nothing of ``others`` (the paths of
    the image's other initrd layers). Empty when nothing is worth an image (a static runtime
    holds only the init and its skeleton)."""
    files = [PurePosixPath(m.path) for m in runtime if stat.S_ISREG(m.mode)]
    dirs = {PurePosixPath(m.path) for m in runtime if stat.S_ISDIR(m.mode)}
    foreign = [PurePosixPath(p.lstrip("/")) for p in others]

    def beneath(paths: Iterable[PurePosixPath], d: PurePosixPath) -> bool:
        return any(d in p.parents for p in paths)

    chosen: list[str] = []

    def visit(d: PurePosixPath) -> None:
        if not beneath(files, d):
            return
        if d != PurePosixPath(".") and not beneath(foreign, d) and d not in foreign:
            chosen.append("/" + str(d))
            return
        for child in sorted(c for c in dirs if c.parent == d and c != d):
            visit(child)

    visit(PurePosixPath("."))
    for mount in chosen:
        if not set(mount) <= _SAFE:
            raise BuildError(
                f"runtime directory {mount!r} cannot be named on a kernel command line"
            )
    return tuple(chosen)


def runtime_boot_archive(runtime: Sequence[CpioMember], mounts: Sequence[str], dest: Path) -> int:
    """Write what stays in the guest's RAM root: every entry not beneath a mount point (the
    mount points themselves stay, empty). Returns the archive's size."""
    roots = [PurePosixPath(m.lstrip("/")) for m in mounts]
    archive = CpioArchive()
    for member in runtime:
        p = PurePosixPath(member.path)
        if any(r in p.parents for r in roots):
            continue
        kind = stat.S_IFMT(member.mode)
        perm = stat.S_IMODE(member.mode)
        if kind == stat.S_IFDIR:
            archive.add_dir(member.path, perm)
        elif kind == stat.S_IFREG:
            archive.add_file(member.path, member.data, perm)
        elif kind == stat.S_IFLNK:
            archive.add_symlink(member.path, member.data.decode("utf-8", "surrogateescape"))
        elif kind == stat.S_IFCHR:
            archive.add_char_device(member.path, *member.rdev, mode=perm)
        else:
            raise BuildError(f"runtime entry {member.path!r} has a type a boot archive cannot hold")
    return archive.write_to(dest)


def runtime_erofs(runtime: Sequence[CpioMember], dest: Path) -> int:
    """Write the whole layer (devices aside: nothing is ever mounted from the image's /dev) as
    a reproducible erofs image at ``dest``; returns its size."""
    if shutil.which(MKFS_EROFS) is None:
        raise BuildError(
            f"{MKFS_EROFS} is not installed; install Debian's erofs-utils "
            "(`apt-get install erofs-utils`) or boot the image from its initramfs"
        )
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".erofs-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        _extract(runtime, tree)
        image = Path(tmp) / "image"
        cmd = [MKFS_EROFS, "--quiet", "-T0", f"-U{_UUID}", "--all-root", "-x-1"]
        cmd += ["-Enoinline_data", str(image), str(tree)]
        result = subprocess.run(cmd, capture_output=True, text=True, env={"LC_ALL": "C"})
        if result.returncode != 0:
            raise BuildError(f"{MKFS_EROFS} failed: {(result.stderr or result.stdout).strip()}")
        size = image.stat().st_size
        padded = -(-size // _ALIGN) * _ALIGN
        os.truncate(image, padded)
        image.replace(dest)
    return padded


def _extract(runtime: Sequence[CpioMember], tree: Path) -> None:
    dirs: list[tuple[Path, int]] = []
    for member in runtime:
        target = tree / member.path
        kind = stat.S_IFMT(member.mode)
        perm = stat.S_IMODE(member.mode)
        if kind == stat.S_IFDIR:
            target.mkdir(parents=True, exist_ok=True)
            dirs.append((target, perm))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == stat.S_IFREG:
            target.write_bytes(member.data)
            target.chmod(perm)
        elif kind == stat.S_IFLNK:
            target.symlink_to(member.data.decode("utf-8", "surrogateescape"))
        # Devices stay out: the guest's /dev is devtmpfs, never the image's.
    for directory, perm in reversed(dirs):  # deepest last-made first, so writes went through
        directory.chmod(perm)
