"""The wrapper every driver runs behind: path checks, error mapping and metrics, done once.

Backends stay small because they can trust their input (a valid relative path) and may let
``OSError`` escape: the wrapper turns it into a :class:`StorageError` naming the driver and path.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ukedge.hub.storage.base import (
    FileInfo,
    InvalidPathError,
    PathNotFoundError,
    StorageDriver,
    StorageError,
)

__all__ = ["PATH_PATTERN", "CheckedDriver", "Observer"]

#: Relative, ``/``-separated components of safe characters; ``_tmp`` is the drivers' scratch.
PATH_PATTERN = re.compile(
    r"^(?!_tmp(?:/|$))[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
)

#: Called after each operation with (driver, operation, seconds, succeeded).
Observer = Callable[[str, str, float, bool], None]

_T = TypeVar("_T")


class CheckedDriver:
    """A :class:`StorageDriver` that validates paths and normalises errors of another one."""

    def __init__(self, inner: StorageDriver, observe: Observer | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self._observe = observe

    def _check(self, path: str, *, allow_root: bool = False) -> str:
        if (allow_root and path == "") or PATH_PATTERN.match(path):
            return path
        raise InvalidPathError(self.name, path)

    async def _run(self, op: str, path: str, call: Callable[[], Awaitable[_T]]) -> _T:
        start = time.perf_counter()
        ok = False
        try:
            result = await call()
            ok = True
            return result
        except StorageError:
            raise
        except FileNotFoundError as exc:
            raise PathNotFoundError(self.name, path) from exc
        except OSError as exc:
            raise StorageError(self.name, path, exc.strerror or str(exc)) from exc
        finally:
            if self._observe is not None:
                self._observe(self.name, op, time.perf_counter() - start, ok)

    async def stat(self, path: str) -> FileInfo:
        self._check(path)
        return await self._run("stat", path, lambda: self.inner.stat(path))

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        self._check(path)
        if offset < 0 or (length is not None and length < 0):
            raise StorageError(self.name, path, f"bad range offset={offset} length={length}")
        return await self._run("read", path, lambda: self.inner.read(path, offset, length))

    async def write(self, path: str, chunks: AsyncIterable[bytes], *, append: bool = False) -> int:
        self._check(path)
        return await self._run("write", path, lambda: self.inner.write(path, chunks, append=append))

    async def move(self, src: str, dst: str) -> None:
        self._check(src)
        self._check(dst)
        await self._run("move", src, lambda: self.inner.move(src, dst))

    async def delete(self, path: str) -> None:
        self._check(path)
        await self._run("delete", path, lambda: self.inner.delete(path))

    async def list(self, prefix: str) -> list[str]:
        self._check(prefix, allow_root=True)
        return await self._run("list", prefix, lambda: self.inner.list(prefix))
