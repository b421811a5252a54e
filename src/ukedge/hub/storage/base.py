"""The storage-driver contract: the one narrow interface every hub blob backend implements.

Paths are relative, ``/``-separated and made of ``[A-Za-z0-9._-]`` components (no ``..``, no
leading ``/``); :class:`~ukedge.hub.storage.CheckedDriver` enforces that before a driver sees
them. Drivers know nothing of digests, repositories or uploads: the hub's blob layer decides the
layout, a driver only stores bytes under names. That keeps a new backend (S3, a second disk) a
one-file job, tested by the shared conformance suite in ``tests/conformance/storage.py``.

Errors::

    HubError
     └── StorageError          a backend failed; carries ``driver`` and ``path``
          ├── PathNotFoundError   nothing stored under the path
          └── InvalidPathError    the path is not one a driver may be given
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ukedge.errors import HubError

__all__ = [
    "FileInfo",
    "InvalidPathError",
    "PathNotFoundError",
    "StorageDriver",
    "StorageError",
]


class StorageError(HubError):
    """A storage backend failed; ``driver`` names the backend, ``path`` what it was asked for."""

    def __init__(self, driver: str, path: str, message: str) -> None:
        self.driver = driver
        self.path = path
        super().__init__(f"storage driver {driver!r}: {path}: {message}")


class PathNotFoundError(StorageError):
    """Nothing is stored under the path."""

    def __init__(self, driver: str, path: str) -> None:
        super().__init__(driver, path, "no such path")


class InvalidPathError(StorageError):
    """The path has a component a driver may not be given (``..``, an empty part, a space…)."""

    def __init__(self, driver: str, path: str) -> None:
        super().__init__(
            driver, path, "invalid path: use relative '/'-separated [A-Za-z0-9._-] components"
        )


@dataclass(frozen=True)
class FileInfo:
    """What :meth:`StorageDriver.stat` knows about a path."""

    path: str
    size: int
    modified: float
    is_dir: bool


@runtime_checkable
class StorageDriver(Protocol):
    """Byte storage under relative paths.

    Every method is a coroutine so that a network backend can await its I/O; the filesystem
    driver does its short local writes inline. No method ever holds a whole object in memory.
    """

    #: Short backend name used in errors and metrics (``"filesystem"``).
    name: str

    async def stat(self, path: str) -> FileInfo:
        """Size and modification time of ``path``.

        A directory (a prefix that has children) reports ``is_dir=True`` and size 0.
        Raises :class:`PathNotFoundError` when nothing is stored under ``path``.
        """
        ...

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Open ``path`` and return an iterator over bytes ``[offset, offset+length)``.

        ``length=None`` reads to the end. The object is opened before this returns, so a missing
        path raises :class:`PathNotFoundError` here and not halfway through a response. An
        ``offset`` at or past the end yields nothing. Chunks are bounded in size (at most 4 MiB).
        """
        ...

    async def write(self, path: str, chunks: AsyncIterable[bytes], *, append: bool = False) -> int:
        """Store the bytes of ``chunks`` under ``path``; returns how many bytes this call wrote.

        Without ``append`` the write is atomic: readers see the old content or the new, never
        part of it, and a failure (an exception from ``chunks`` included) leaves the old content
        in place. With ``append`` the bytes go after the existing content (a missing path starts
        empty); a failure truncates back to the size before the call. Parent prefixes are made
        as needed. Appends are not durable on return (the session file's size after a crash is
        what reached the disk); :meth:`move` makes them so.
        """
        ...

    async def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` atomically, replacing ``dst`` if it exists.

        Durable on return: once this returns, ``dst`` holds all of ``src``'s content and the
        rename itself survives a crash or power cut (the hub records a blob in its metadata only
        after this returns, so the metadata never names content that is not on disk). ``dst``'s
        modification time is the time of the move, so a sweep of old files never takes content
        published a moment ago. Raises :class:`PathNotFoundError` when ``src`` does not exist.
        """
        ...

    async def delete(self, path: str) -> None:
        """Remove ``path`` and, if it is a prefix, everything under it.

        Raises :class:`PathNotFoundError` when nothing is stored under ``path``.
        """
        ...

    async def list(self, prefix: str) -> list[str]:
        """Full paths of the direct children of ``prefix`` (files and sub-prefixes), sorted.

        ``""`` lists the root. Raises :class:`PathNotFoundError` when ``prefix`` does not exist.
        """
        ...
