"""Where ukedge keeps its state on this machine.

Everything lives under one directory so that a user can see, back up or delete it at once:
``$UKEDGE_HOME`` when set, else ``$XDG_DATA_HOME/ukedge``, else ``~/.local/share/ukedge``.
Derived data that is slow to make and safe to share (built kernels, runtime layers) lives in
``$UKEDGE_CACHE`` when set, else ``<home>/cache``, so that tests with a throw-away home still
reuse the kernel built once on this machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "cache_dir",
    "home",
    "instances_dir",
    "kernels_dir",
    "private_dir",
    "private_file",
    "slim_qemu",
    "slim_qemu_dir",
    "store_dir",
    "write_private",
]


def home() -> Path:
    explicit = os.environ.get("UKEDGE_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "ukedge"


def store_dir() -> Path:
    """The OCI image layout that holds local images."""
    return home() / "store"


def cache_dir() -> Path:
    """Derived data that can be rebuilt: kernels, runtime layers, the accelerator verdict."""
    explicit = os.environ.get("UKEDGE_CACHE")
    return Path(explicit).expanduser() if explicit else home() / "cache"


def kernels_dir() -> Path:
    """Built kernels, one directory per (source version, profile fragment) hash."""
    return cache_dir() / "kernels"


def slim_qemu_dir() -> Path:
    """Where ``make qemu-slim`` installs a QEMU built with only what the guests use; a node
    runs it (:func:`slim_qemu`) when ``UKEDGE_QEMU`` names it."""
    return cache_dir() / "qemu-slim"


def slim_qemu() -> Path:
    """The x86_64 binary of the build in :func:`slim_qemu_dir` (there once it is built)."""
    return slim_qemu_dir() / "bin" / "qemu-system-x86_64"


def instances_dir() -> Path:
    """Per-instance state of the local instance manager."""
    return home() / "instances"


def private_dir(path: Path) -> Path:
    """Make ``path`` (and its parents) and leave it 0700, whatever mode it had.

    A server's data directory holds secrets (password hashes, signing keys, tokens); an operator
    who made it with ``mkdir`` (0755) would otherwise leave them to every local user, the QEMU
    user ``nobody`` included.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing and leave it 0600 (before SQLite opens it: SQLite gives
    its ``-wal`` and ``-shm`` files the database file's mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    path.chmod(0o600)
    return path


def write_private(
    path: Path, data: bytes | str, *, before_rename: Callable[[], None] | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically and durably, readable by its owner only.

    Keys, tokens and credentials are written this way: to a temporary name in the same directory
    (0600 from the start, so the secret is never readable by others, not even half-written),
    fsynced, renamed over the old file, and the directory fsynced so the rename survives a power
    cut. A crash leaves the old file or the new one; temporary files a crashed writer left are
    removed by the next write (one writer per data directory). ``before_rename`` runs between
    the fsync and the rename: crash-point tests kill the process there.
    """
    payload = data.encode() if isinstance(data, str) else data
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        staging.replace(path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
