"""Backends by name, so configuration picks a hypervisor without importing its module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ukedge.backends import Backends
from ukedge.vmm.base import MachineBackend

__all__ = ["backends", "create"]

#: Modules are imported only when their backend is asked for.
_BACKENDS: Backends[MachineBackend] = Backends("VM backend")
_BACKENDS.register("qemu", "ukedge.vmm.qemu:qemu_backend")


def backends() -> list[str]:
    """Names ``create`` accepts."""
    return _BACKENDS.names()


def create(name: str, config: Mapping[str, Any] | None = None) -> MachineBackend:
    """The backend called ``name`` configured with ``config`` (see each backend's options)."""
    return _BACKENDS.create(name, config)
