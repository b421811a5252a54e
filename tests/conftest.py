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

_REAL_CACHE = Path(
    os.environ.get("UKEDGE_CACHE")
    or Path(os.environ.get("UKEDGE_HOME", Path.home() / ".local/share/ukedge")) / "cache"
)


@pytest.fixture(autouse=True)
def ukedge_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ukedge-home")
    monkeypatch.setenv("UKEDGE_HOME", str(home))
    monkeypatch.setenv("UKEDGE_CACHE", str(_REAL_CACHE))
    yield home
