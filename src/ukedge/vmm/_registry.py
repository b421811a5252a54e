"""Backends by name, so configuration picks a hypervisor without importing its module."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ukedge.errors import UsageError
from ukedge.vmm.base import MachineBackend

#: name -> "module:factory"; modules are imported only when their backend is asked for.
_BACKENDS: dict[str, str] = {
    "qemu": "ukedge.vmm.qemu:qemu_backend",
}


def backends() -> list[str]:
    """Names ``create`` accepts."""
    return sorted(_BACKENDS)


def create(name: str, **config: Any) -> MachineBackend:
    """The backend called ``name`` configured with ``config`` (see each backend's options)."""
    target = _BACKENDS.get(name)
    if target is None:
        raise UsageError(f"unknown VM backend {name!r}; known: {', '.join(backends())}")
    module, _, attr = target.partition(":")
    factory: Callable[..., MachineBackend] = getattr(importlib.import_module(module), attr)
    return factory(**config)
