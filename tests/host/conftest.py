"""An instance manager over the examples' store (``example_store``, from :mod:`kit.examples`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.manager import instance_manager, remove_all
from ukedge.host import InstanceManager


@pytest.fixture
def manager(example_store: Path, ukedge_home: Path) -> Iterator[InstanceManager]:
    mgr = instance_manager(ukedge_home / "instances", example_store)
    yield mgr
    remove_all(mgr)
