"""Reproducible newc cpio archives: the format Linux unpacks into its initramfs.

Entries are collected first and written sorted by path with fixed inode numbers, owner 0:0 and
one mtime (``SOURCE_DATE_EPOCH``, default 0), so the same inputs always give the same bytes;
missing parent directories are added. File data is read from disk only while writing, so large
runtimes never sit in memory whole. Compression (:func:`gzip_file`) writes a fixed gzip header
(no name, mtime 0) for the same reason.
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ukedge.errors import BuildError

__all__ = ["CpioArchive", "CpioEntry", "gzip_file", "source_date_epoch"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"
_CHUNK = 1 << 20
#: The guest's page size and the longest symlink target tmpfs keeps inside its inode.
_PAGE = 4096
_SHORT_SYMLINK = 128


def source_date_epoch() -> int:
    """The mtime every entry gets: ``$SOURCE_DATE_EPOCH`` (reproducible-builds.org), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        return int(value)
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``data`` is bytes or a path whose content is copied at write time."""

    path: str
    mode: int
    data: bytes | Path = b""
    rdev: tuple[int, int] = (0, 0)

    @property
    def size(self) -> int:
        return self.data.stat().st_size if isinstance(self.data, Path) else len(self.data)


def _normalise(path: str) -> str:
    p = PurePosixPath("/" + path.lstrip("/"))
    if ".." in p.parts:
        raise BuildError(f"archive path {path!r} must not contain '..'")
    return str(p)[1:]


class CpioArchive:
    """Collects entries, then writes them as one deterministic newc archive."""

    def __init__(self) -> None:
        self._entries: dict[str, CpioEntry] = {}

    def __contains__(self, path: str) -> bool:
        return _normalise(path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _add(self, entry: CpioEntry) -> None:
        path = _normalise(entry.path)
        if not path:
            return
        parent = str(PurePosixPath(path).parent)
        if parent != "." and parent not in self._entries:
            self.add_dir(parent)
        self._entries[path] = CpioEntry(path, entry.mode, entry.data, entry.rdev)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._add(CpioEntry(path, stat.S_IFDIR | mode))

    def add_file(self, path: str, data: bytes | Path, mode: int = 0o644) -> None:
        self._add(CpioEntry(path, stat.S_IFREG | mode, data))

    def add_symlink(self, path: str, target: str) -> None:
        self._add(CpioEntry(path, stat.S_IFLNK | 0o777, target.encode()))

    def add_char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(CpioEntry(path, stat.S_IFCHR | mode, rdev=(major, minor)))

    def add_tree(self, source: Path, prefix: str, *, exclude: Iterable[str] = ()) -> None:
        """Add a directory tree; modes are normalised to 0755 (executable or dir) or 0644."""
        skip = set(exclude)
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d not in skip)
            rel_root = Path(root).relative_to(source)
            dest_root = PurePosixPath(prefix) / rel_root.as_posix()
            self.add_dir(str(dest_root))
            for name in sorted(dirs):
                full = Path(root) / name
                if full.is_symlink():
                    self.add_symlink(str(dest_root / name), str(full.readlink()))
            for name in sorted(files):
                if name in skip:
                    continue
                full = Path(root) / name
                dest = str(dest_root / name)
                if full.is_symlink():
                    self.add_symlink(dest, str(full.readlink()))
                elif full.is_file():
                    executable = full.stat().st_mode & 0o111
                    self.add_file(dest, full, 0o755 if executable else 0o644)

    def rootfs_size(self) -> int:
        """Bytes of RAM the entries take once Linux unpacks them into its tmpfs root.

        tmpfs charges whole pages: file data rounded up to 4 KiB, a page for a symlink target of
        128 bytes or more, nothing for directories and devices. This, not the archive's size,
        is what must fit under the root's size limit when the guest boots.
        """
        total = 0
        for entry in self._entries.values():
            if stat.S_ISREG(entry.mode):
                total += -(-entry.size // _PAGE) * _PAGE
            elif stat.S_ISLNK(entry.mode) and entry.size >= _SHORT_SYMLINK:
                total += _PAGE
        return total

    def write(self, out: BinaryIO) -> int:
        """Write the archive (sorted, trailer included); returns the number of bytes written."""
        mtime = source_date_epoch()
        written = 0
        for ino, path in enumerate(sorted(self._entries), start=1):
            written += _write_entry(out, self._entries[path], ino, mtime)
        written += _write_entry(out, CpioEntry(_TRAILER, 0), 0, 0)
        return written

    def write_to(self, path: Path) -> int:
        """Write to ``path`` atomically."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                n = self.write(f)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return n


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _write_entry(out: BinaryIO, entry: CpioEntry, ino: int, mtime: int) -> int:
    name = entry.path.encode() + b"\0"
    size = entry.size if not stat.S_ISDIR(entry.mode) else 0
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, mtime, size, 0, 0, *entry.rdev, len(name), 0)
    header = _MAGIC + b"".join(b"%08X" % f for f in fields)
    out.write(header + name + _pad(len(header) + len(name)))
    written = len(header) + len(name) + len(_pad(len(header) + len(name)))
    if size:
        if isinstance(entry.data, Path):
            copied = 0
            with entry.data.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    out.write(chunk)
                    copied += len(chunk)
            if copied != size:
                raise BuildError(f"{entry.data} changed size while it was archived")
        else:
            out.write(entry.data)
        out.write(_pad(size))
        written += size + len(_pad(size))
    return written


def gzip_file(source: Path, dest: Path, level: int = 9) -> None:
    """Compress with a fixed header (no file name, mtime 0) so equal input gives equal output."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with (
            source.open("rb") as src,
            tmp.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=raw, mtime=0) as gz,
        ):
            while chunk := src.read(_CHUNK):
                gz.write(chunk)
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
