"""Helpers for the host tests: the ``ukedge`` command, waiting for HTTP, and an instance
manager over a store as the tests wire one (and its clean-up)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from ukedge import paths, vmm
from ukedge.host import InstanceManager, UnpackedLayers
from ukedge.image import ImageStore


def ukedge_cmd() -> list[str]:
    return [sys.executable, "-m", "ukedge.cli.main"]


def wait_http(url: str, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=2.0)
        except httpx.TransportError as exc:
            last = exc
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s: {last}")


def instance_manager(
    root: Path, store: Path, *, disk_bus: str | None = None, shared_runtime: bool = False
) -> InstanceManager:
    """A manager of instances under ``root`` over the image store at ``store``, on QEMU (with
    ``disk_bus`` for a runtime served from a disk image, ``shared_runtime``)."""
    return InstanceManager(
        root,
        ImageStore(store),
        vmm.create("qemu", {"disk_bus": disk_bus} if disk_bus else None),
        UnpackedLayers(paths.cache_dir() / "unpacked", shared_runtime=shared_runtime),
    )


def remove_all(manager: InstanceManager) -> None:
    """Remove every instance of ``manager``, running or not (a test's clean-up)."""
    for instance in manager.list(all_instances=True):
        manager.remove(instance.id, force=True)
