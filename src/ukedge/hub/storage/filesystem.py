"""The default storage driver: a directory on the local filesystem.

Writes go to ``<root>/_tmp/`` (same filesystem) and are renamed into place, so a blob path holds
either nothing or whole content, even after a SIGKILL. Appends (chunked uploads) write straight to
the session file: after a crash its size is exactly the bytes received, which is the offset a
resumed upload continues from. A move fsyncs the file, renames it, then fsyncs the directory that
received it: a rename is only durable once its directory is (ext4, xfs), and the hub commits a
blob's metadata right after the move. Local writes land in the page cache in microseconds, so they
run inline on the event loop; only ``fsync`` (which may wait for the disk) goes to a worker thread.
With ``fsync`` off (tests, scratch hubs) nothing is synced and a power cut may lose recent blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread

from ukedge.hub.storage.base import FileInfo, PathNotFoundError, StorageError

__all__ = ["FilesystemDriver"]

_CHUNK = 4 << 20  # big reads keep the socket full when the client is CPU-bound
_TMP = "_tmp"


class FilesystemDriver:
    """Stores each path as a file under ``root``; see the module docstring for crash safety."""

    name = "filesystem"

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        (self.root / _TMP).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FilesystemDriver:
        if "root" not in config:
            raise StorageError("filesystem", "", "config needs 'root', the directory to store in")
        return cls(Path(config["root"]), fsync=bool(config.get("fsync", True)))

    def _full(self, path: str) -> Path:
        return self.root / path if path else self.root

    async def stat(self, path: str) -> FileInfo:
        try:
            st = self._full(path).stat()
        except FileNotFoundError:
            raise PathNotFoundError(self.name, path) from None
        is_dir = self._full(path).is_dir()
        return FileInfo(path, 0 if is_dir else st.st_size, st.st_mtime, is_dir)

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            f = self._full(path).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise PathNotFoundError(self.name, path) from None
        f.seek(offset)

        async def chunks() -> AsyncIterator[bytes]:
            # Read ahead in a worker thread: the next chunk is copied out of the page cache
            # while the event loop is still sending this one (two cores, both busy).
            loop = asyncio.get_running_loop()
            remaining = length

            def want() -> int:
                return _CHUNK if remaining is None else min(_CHUNK, remaining)

            try:
                pending = loop.run_in_executor(None, f.read, want()) if want() else None
                while pending is not None:
                    data = await pending
                    if not data:
                        return
                    if remaining is not None:
                        remaining -= len(data)
                    pending = loop.run_in_executor(None, f.read, want()) if want() else None
                    yield data
            finally:
                if pending is not None:
                    with contextlib.suppress(Exception):
                        await pending
                f.close()

        return chunks()

    async def write(self, path: str, chunks: AsyncIterable[bytes], *, append: bool = False) -> int:
        target = self._full(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if append:
            return await self._append(target, chunks)
        tmp = self.root / _TMP / uuid.uuid4().hex
        written = 0
        try:
            with tmp.open("wb") as f:
                async for chunk in chunks:
                    f.write(chunk)
                    written += len(chunk)
                if self.fsync:
                    f.flush()
                    await anyio.to_thread.run_sync(os.fsync, f.fileno())
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    async def _append(self, target: Path, chunks: AsyncIterable[bytes]) -> int:
        with target.open("ab") as f:
            start = f.tell()
            written = 0
            try:
                async for chunk in chunks:
                    f.write(chunk)
                    written += len(chunk)
            except BaseException:
                f.flush()
                f.truncate(start)
                raise
        return written

    async def move(self, src: str, dst: str) -> None:
        source = self._full(src)
        if not source.exists():
            raise PathNotFoundError(self.name, src)
        target = self._full(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            os.utime(source)  # see the contract: a sweep of old files must not take it
            if self.fsync:
                await anyio.to_thread.run_sync(_fsync_path, source)
        source.replace(target)
        if self.fsync:
            await anyio.to_thread.run_sync(_fsync_path, target.parent)

    async def delete(self, path: str) -> None:
        full = self._full(path)
        if full.is_dir():
            shutil.rmtree(full)
        else:
            try:
                full.unlink()
            except FileNotFoundError:
                raise PathNotFoundError(self.name, path) from None

    async def list(self, prefix: str) -> list[str]:
        full = self._full(prefix)
        if not full.is_dir():
            raise PathNotFoundError(self.name, prefix)
        base = f"{prefix}/" if prefix else ""
        return sorted(
            base + entry.name for entry in full.iterdir() if not (not prefix and entry.name == _TMP)
        )


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's entries: the renames into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
