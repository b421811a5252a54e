"""Fixtures shared by every test directory.

Each test gets a throw-away ``UKEDGE_HOME`` so no test sees another's images or instances; the
cache of slow derived data (built kernels, runtime layers) stays shared through
``UKEDGE_CACHE`` so the kernel is built once per machine, not once per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers assert too; rewritten, their failures show the values like a test's own asserts.
pytest.register_assert_rewrite("kit", "conformance")

from kit.examples import (  # noqa: E402  (fixtures every directory shares)
    arm64_example_store,
    cli_home,
    example_store,
)

__all__ = ["arm64_example_store", "cli_home", "example_store", "ukedge_home"]

_REAL_CACHE = Path(
    os.environ.get("UKEDGE_CACHE")
    or Path(os.environ.get("UKEDGE_HOME", Path.home() / ".local/share/ukedge")) / "cache"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A VM boots a built kernel, so every ``vm`` test is a ``kernel`` test too: ``-m kernel``
    selects all that need one and ``-m 'not kernel'`` runs on a machine without it.

    Tests of the other architecture (marked ``foreign_arch``, or using the arm64 example store)
    run last: ``make test`` builds that architecture's kernel in the background while the rest
    runs, which leaves much of a core idle on a 2-core machine, and they wait on its lock.
    """
    for item in items:
        if "arm64_example_store" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.foreign_arch)
        needs_kernel = item.get_closest_marker("foreign_arch") or item.get_closest_marker("vm")
        if needs_kernel and not item.get_closest_marker("kernel"):
            item.add_marker(pytest.mark.kernel)
    items.sort(key=lambda item: item.get_closest_marker("foreign_arch") is not None)


@pytest.fixture(autouse=True)
def ukedge_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ukedge-home")
    monkeypatch.setenv("UKEDGE_HOME", str(home))
    monkeypatch.setenv("UKEDGE_CACHE", str(_REAL_CACHE))
    yield home
