"""The link's fixtures: a node (manager and image cache) over the examples' store, as the agent
wires one; and for the end-to-end tests a real controller (on SQLite, or on PostgreSQL for a
test parametrized ``indirect``), its admin API, and a hub empty or with the examples pushed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.agent import examples_hub
from kit.hub import RunningHub, start_hub
from kit.link_controller import AdminApi, RestartableController, restartable_controller
from kit.postgres import postgres_cluster
from ukedge import paths, vmm
from ukedge.host import InstanceManager, LocalNode, UnpackedLayers
from ukedge.host._wiring import open_image_cache
from ukedge.host.instances import Capacity
from ukedge.image import ImageStore

__all__ = ["api", "controller", "empty_hub", "hub", "node", "postgres_cluster"]

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


@pytest.fixture
def controller(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RestartableController]:
    """A running controller; ``@pytest.mark.parametrize("controller", ["sqlite",
    "postgresql"], indirect=True)`` runs a test on both databases."""
    with restartable_controller(request, tmp_path / "controller") as running:
        yield running


@pytest.fixture
def api(controller: RestartableController) -> Iterator[AdminApi]:
    admin = AdminApi(controller)
    yield admin
    admin.close()


@pytest.fixture
def empty_hub(tmp_path: Path) -> Iterator[RunningHub]:
    """A hub of the test's own, holding nothing."""
    running = start_hub(tmp_path / "hub")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, example_store: Path) -> Iterator[str]:
    """The address of a hub holding hello-c:1 and sensor-agg:1, one per test module."""
    store = ImageStore(example_store)
    with examples_hub(tmp_path_factory.mktemp("hub"), store, "hello-c:1", "sensor-agg:1") as addr:
        yield addr
