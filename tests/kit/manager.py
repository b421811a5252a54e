"""An instance manager over a store, as the host tests wire one, and its clean-up.

Apart from :mod:`kit.host` because importing :mod:`ukedge.host` takes a while and every test
process imports ``kit.host`` (through the examples' fixtures).
"""

from __future__ import annotations

from pathlib import Path

from ukedge import paths, vmm
from ukedge.host import InstanceManager, UnpackedLayers
from ukedge.image import ImageStore

__all__ = ["instance_manager", "remove_all"]


def instance_manager(
    root: Path,
    store: Path,
    *,
    disk_bus: str | None = None,
    shared_runtime: bool = False,
    binary: Path | None = None,
) -> InstanceManager:
    """A manager of instances under ``root`` over the image store at ``store``, on QEMU (with
    ``disk_bus`` for a runtime served from a disk image, ``shared_runtime``; ``binary``: a QEMU
    other than the one on PATH)."""
    options: dict[str, object] = {}
    if disk_bus:
        options["disk_bus"] = disk_bus
    if binary is not None:
        options["binary"] = str(binary)
    return InstanceManager(
        root,
        ImageStore(store),
        vmm.create("qemu", options or None),
        UnpackedLayers(paths.cache_dir() / "unpacked", shared_runtime=shared_runtime),
    )


def remove_all(manager: InstanceManager) -> None:
    """Remove every instance of ``manager``, running or not (a test's clean-up)."""
    for instance in manager.list(all_instances=True):
        manager.remove(instance.id, force=True)
