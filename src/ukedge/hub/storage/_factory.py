"""Backends by name: configuration picks a driver, callers never import one directly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ukedge.backends import Backends, Factory
from ukedge.hub.storage._checked import CheckedDriver, Observer
from ukedge.hub.storage.base import StorageDriver

__all__ = ["create", "driver_names", "register"]

_DRIVERS: Backends[StorageDriver] = Backends("storage driver")


def register(name: str, factory: Factory[StorageDriver] | str) -> None:
    """Make a backend available to :func:`create` under ``name``."""
    _DRIVERS.register(name, factory)


def driver_names() -> list[str]:
    return _DRIVERS.names()


def create(name: str, config: Mapping[str, Any], observe: Observer | None = None) -> CheckedDriver:
    """The driver called ``name`` built from ``config``, wrapped in :class:`CheckedDriver`."""
    return CheckedDriver(_DRIVERS.create(name, config), observe)
