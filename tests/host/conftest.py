"""An instance manager over the examples' store (``example_store``, from :mod:`kit.examples`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ukedge import paths, vmm
from ukedge.host import InstanceManager, UnpackedLayers
from ukedge.image import ImageStore


@pytest.fixture
def manager(example_store: Path, ukedge_home: Path) -> Iterator[InstanceManager]:
    mgr = InstanceManager(
        ukedge_home / "instances",
        ImageStore(example_store),
        vmm.create("qemu"),
        UnpackedLayers(paths.cache_dir() / "unpacked"),
    )
    yield mgr
    for instance in mgr.list():
        mgr.remove(instance.id, force=True)
