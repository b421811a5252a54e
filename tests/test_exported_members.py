"""Every subpackage's public API is its ``__all__``: complete, and nothing listed is missing."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import ukedge


def _subpackages() -> list[str]:
    names = ["ukedge.errors", "ukedge.image"]
    # Nested subpackages too (``ukedge.host.instances``): each room's __init__ is an API.
    for info in pkgutil.walk_packages(ukedge.__path__, "ukedge."):
        if info.ispkg and info.name not in names:
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _subpackages())
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(getattr(module, "__all__", []))
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", name).startswith(name)
    }
    assert public <= exported, (
        f"{name}: public names missing from __all__: {sorted(public - exported)}"
    )
    missing = [attr for attr in exported if not hasattr(module, attr)]
    assert not missing, f"{name}: __all__ lists names that do not exist: {missing}"
