"""A node (manager and image cache) over the examples' store, as the agent wires one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ukedge import paths, vmm
from ukedge.host import InstanceManager, LocalNode, UnpackedLayers
from ukedge.host._wiring import open_image_cache
from ukedge.host.instances import Capacity
from ukedge.image import ImageStore

_MIB = 1 << 20


@pytest.fixture
def node(example_store: Path, ukedge_home: Path) -> Iterator[LocalNode]:
    manager = InstanceManager(
        ukedge_home / "instances",
        ImageStore(example_store),
        vmm.create("qemu"),
        UnpackedLayers(paths.cache_dir() / "unpacked"),
        capacity=Capacity(memory_allocatable_bytes=2048 * _MIB, cpus=4, overcommit_ratio=1.5),
    )
    local = LocalNode(manager, open_image_cache(manager), name="edge-1", labels={"zone": "a"})
    yield local
    for instance in manager.list(all_instances=True):
        manager.remove(instance.id, force=True)
    local.close()
    manager.close()
