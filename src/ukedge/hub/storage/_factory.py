"""Backends by name: configuration picks a driver, callers never import one directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ukedge.errors import UsageError
from ukedge.hub.storage._checked import CheckedDriver, Observer
from ukedge.hub.storage.base import StorageDriver

__all__ = ["create", "driver_names", "register"]

_FACTORIES: dict[str, Callable[[dict[str, Any]], StorageDriver]] = {}


def register(name: str, factory: Callable[[dict[str, Any]], StorageDriver]) -> None:
    """Make a backend available to :func:`create` under ``name``."""
    _FACTORIES[name] = factory


def driver_names() -> list[str]:
    return sorted(_FACTORIES)


def create(name: str, config: dict[str, Any], observe: Observer | None = None) -> CheckedDriver:
    """The driver called ``name`` built from ``config``, wrapped in :class:`CheckedDriver`."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UsageError(
            f"unknown storage driver {name!r}; available: {', '.join(driver_names())}"
        ) from None
    return CheckedDriver(factory(config), observe)
