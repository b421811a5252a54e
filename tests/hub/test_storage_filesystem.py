from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.storage import StorageDriverSuite, run
from ukedge.errors import UsageError
from ukedge.hub.storage import CheckedDriver, StorageError, create, driver_names


@pytest.fixture
def driver(tmp_path: Path) -> CheckedDriver:
    return create("filesystem", {"root": str(tmp_path / "store"), "fsync": True})


class TestFilesystemDriver(StorageDriverSuite):
    def test_no_temp_files_left_behind(self, driver: CheckedDriver, tmp_path: Path) -> None:
        async def chunks():  # type: ignore[no-untyped-def]
            yield b"x"

        run(driver.write("a", chunks()))
        assert list((tmp_path / "store" / "_tmp").iterdir()) == []

    def test_move_refreshes_mtime(self, driver: CheckedDriver, tmp_path: Path) -> None:
        """A session file last written long ago must not look like an old stray once published."""

        async def chunks():  # type: ignore[no-untyped-def]
            yield b"x"

        run(driver.write("uploads/s", chunks(), append=True))
        os.utime(tmp_path / "store" / "uploads" / "s", (1000, 1000))
        run(driver.move("uploads/s", "blobs/b"))
        assert run(driver.stat("blobs/b")).modified > 1000


def test_factory_picks_by_name_and_reports_unknown(tmp_path: Path) -> None:
    assert "filesystem" in driver_names()
    with pytest.raises(UsageError, match="unknown storage driver 's4'"):
        create("s4", {})
    with pytest.raises(StorageError, match="root"):
        create("filesystem", {})


def test_wrapper_reports_operations(tmp_path: Path) -> None:
    seen: list[tuple[str, str, bool]] = []
    driver = create(
        "filesystem", {"root": str(tmp_path)}, lambda d, op, _s, ok: seen.append((d, op, ok))
    )
    from ukedge.hub.storage import PathNotFoundError

    with pytest.raises(PathNotFoundError):
        run(driver.stat("missing"))
    assert seen == [("filesystem", "stat", False)]
