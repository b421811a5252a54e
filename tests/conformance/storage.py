"""The storage-driver conformance suite: every hub storage backend must pass it.

A backend's test module subclasses :class:`StorageDriverSuite` and supplies a ``driver`` fixture
returning a fresh, empty :class:`~ukedge.hub.storage.CheckedDriver` (built with
``ukedge.hub.storage.create``). Backends that need real infrastructure skip in that fixture,
naming the settings they need.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

from ukedge.hub.storage import CheckedDriver, InvalidPathError, PathNotFoundError

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(
    driver: CheckedDriver, path: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([c async for c in await driver.read(path, offset, length)])


class _Boom(Exception):
    pass


async def _failing(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise _Boom


class StorageDriverSuite:
    """Contract tests; see :class:`ukedge.hub.storage.StorageDriver` for what each one checks."""

    def test_write_then_read_and_stat(self, driver: CheckedDriver) -> None:
        size = run(driver.write("a/b/c", _chunks(b"hello ", b"world")))
        assert size == 11
        assert run(_read(driver, "a/b/c")) == b"hello world"
        info = run(driver.stat("a/b/c"))
        assert (info.size, info.is_dir) == (11, False)
        assert run(driver.stat("a/b")).is_dir

    def test_read_range(self, driver: CheckedDriver) -> None:
        run(driver.write("r", _chunks(b"0123456789")))
        assert run(_read(driver, "r", 3, 4)) == b"3456"
        assert run(_read(driver, "r", 8)) == b"89"
        assert run(_read(driver, "r", 10)) == b""
        assert run(_read(driver, "r", 5, 100)) == b"56789"

    def test_large_object_streams_in_bounded_chunks(self, driver: CheckedDriver) -> None:
        data = os.urandom(5 * 1024 * 1024 + 3)
        parts = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        assert run(driver.write("big", _chunks(*parts))) == len(data)
        sizes: list[int] = []
        h = hashlib.sha256()

        async def consume() -> None:
            async for chunk in await driver.read("big"):
                sizes.append(len(chunk))
                h.update(chunk)

        run(consume())
        assert h.digest() == hashlib.sha256(data).digest()
        assert max(sizes) <= 4 * 1024 * 1024

    def test_overwrite_is_atomic_and_failure_keeps_old(self, driver: CheckedDriver) -> None:
        run(driver.write("x", _chunks(b"old")))
        with pytest.raises(_Boom):
            run(driver.write("x", _failing(b"new", b"er")))
        assert run(_read(driver, "x")) == b"old"
        run(driver.write("x", _chunks(b"newer")))
        assert run(_read(driver, "x")) == b"newer"

    def test_append(self, driver: CheckedDriver) -> None:
        assert run(driver.write("u", _chunks(b"abc"), append=True)) == 3
        assert run(driver.write("u", _chunks(b"de", b"f"), append=True)) == 3
        assert run(_read(driver, "u")) == b"abcdef"
        with pytest.raises(_Boom):
            run(driver.write("u", _failing(b"zzz"), append=True))
        assert run(_read(driver, "u")) == b"abcdef"

    def test_move(self, driver: CheckedDriver) -> None:
        run(driver.write("src/f", _chunks(b"data")))
        run(driver.write("dst/f", _chunks(b"old")))
        run(driver.move("src/f", "dst/f"))
        assert run(_read(driver, "dst/f")) == b"data"
        with pytest.raises(PathNotFoundError):
            run(driver.stat("src/f"))
        with pytest.raises(PathNotFoundError):
            run(driver.move("src/f", "elsewhere"))
        run(driver.move("dst/f", "deep/new/place"))
        assert run(_read(driver, "deep/new/place")) == b"data"

    def test_delete_file_and_prefix(self, driver: CheckedDriver) -> None:
        run(driver.write("d/1", _chunks(b"1")))
        run(driver.write("d/sub/2", _chunks(b"2")))
        run(driver.write("keep", _chunks(b"k")))
        run(driver.delete("d/1"))
        with pytest.raises(PathNotFoundError):
            run(driver.stat("d/1"))
        run(driver.delete("d"))
        with pytest.raises(PathNotFoundError):
            run(driver.stat("d/sub/2"))
        with pytest.raises(PathNotFoundError):
            run(driver.delete("d"))
        assert run(_read(driver, "keep")) == b"k"

    def test_list(self, driver: CheckedDriver) -> None:
        for path in ("l/b", "l/a", "l/c/d", "top"):
            run(driver.write(path, _chunks(b".")))
        assert run(driver.list("l")) == ["l/a", "l/b", "l/c"]
        assert run(driver.list("")) == ["l", "top"]
        with pytest.raises(PathNotFoundError):
            run(driver.list("nothing"))

    def test_missing_paths(self, driver: CheckedDriver) -> None:
        with pytest.raises(PathNotFoundError) as info:
            run(driver.read("nope"))
        assert info.value.driver == driver.name
        assert info.value.path == "nope"
        with pytest.raises(PathNotFoundError):
            run(driver.stat("nope"))

    @pytest.mark.parametrize(
        "path", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "sp ace", "_tmp/x", "a/.hidden"]
    )
    def test_invalid_paths_rejected(self, driver: CheckedDriver, path: str) -> None:
        with pytest.raises(InvalidPathError) as info:
            run(driver.write(path, _chunks(b"x")))
        assert driver.name in str(info.value)
        with pytest.raises(InvalidPathError):
            run(driver.stat(path))
