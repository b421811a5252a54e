"""Package re-exports that import their module on first use (PEP 562 ``__getattr__``).

A package's ``__init__`` names its whole API, but a command that needs one small piece of it
(``ukedge ps`` needs the instance models, not the builder or the results forwarder) should not
import every module behind it. The package lists such names with their module here and keeps the
same imports under ``TYPE_CHECKING`` for the type checker; ``__all__`` stays complete.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(namespace: dict[str, Any], table: Mapping[str, str]) -> Callable[[str], Any]:
    """The package's ``__getattr__`` (pass its ``globals()``): ``table`` maps each lazy name to
    the module defining it."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups are plain attribute reads
        return value

    return __getattr__
