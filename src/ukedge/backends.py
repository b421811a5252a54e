"""Backends picked by name: one shape for hypervisors, hub storage drivers and result sinks.

STYLE.md rule 3: configuration names a backend and hands it a config mapping; no caller imports
a backend's module. Each concern keeps one :class:`Backends` (``vmm``: VM backends by name,
``hub.storage``: drivers by name, ``host.sinks``: sinks by URL scheme) and registers its
backends at import, either as a factory or as ``"module:attribute"``, which is imported on
first use so that naming a backend costs nothing until it is created (the QEMU backend pulls in
QMP and asyncio machinery a ``ukedge ps`` never needs).

A factory takes the config mapping and refuses bad settings with a :class:`UsageError` (or its
concern's own error) naming the setting; an unknown name is refused here, listing the known ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from ukedge.errors import UsageError

__all__ = ["Backends", "Factory"]

T = TypeVar("T")

#: Builds a backend from its config mapping.
Factory = Callable[[Mapping[str, Any]], T]


class Backends(Generic[T]):
    """The backends of one concern, by name; ``kind`` names them in errors ("VM backend")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Factory[T] | str] = {}

    def register(self, name: str, factory: Factory[T] | str) -> None:
        """Make ``create(name, …)`` use ``factory``, or the ``"module:attribute"`` it names."""
        self._factories[name] = factory

    def names(self) -> list[str]:
        """Names :meth:`create` accepts."""
        return sorted(self._factories)

    def create(self, name: str, config: Mapping[str, Any] | None = None) -> T:
        """The backend called ``name`` built from ``config`` (empty: its defaults)."""
        factory = self._factories.get(name)
        if factory is None:
            raise UsageError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}"
            )
        if isinstance(factory, str):
            module, _, attribute = factory.partition(":")
            found: Any = importlib.import_module(module)
            for part in attribute.split("."):
                found = getattr(found, part)
            factory = self._factories[name] = found
        return factory(dict(config or {}))
