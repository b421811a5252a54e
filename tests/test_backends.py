"""Backends by name: the one registry shape of VM backends, storage drivers and result sinks."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ukedge import vmm
from ukedge.backends import Backends
from ukedge.errors import UsageError
from ukedge.host.results import sinks
from ukedge.hub import storage


def test_a_factory_gets_the_config_and_unknown_names_list_the_known() -> None:
    seen: list[Mapping[str, Any]] = []
    shelf: Backends[str] = Backends("shelf")
    shelf.register("oak", lambda config: seen.append(config) or f"oak {config.get('size', 1)}")
    assert shelf.create("oak", {"size": 3}) == "oak 3"
    assert shelf.create("oak") == "oak 1"
    assert seen == [{"size": 3}, {}]
    assert shelf.names() == ["oak"]
    with pytest.raises(UsageError, match=r"unknown shelf 'pine'; known: oak"):
        shelf.create("pine")


def test_a_named_factory_is_imported_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plumb_lazy_backend.py").write_text(
        "class Maker:\n"
        "    @staticmethod\n"
        "    def build(config):\n"
        "        return ('built', config)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    lazy: Backends[tuple[str, Mapping[str, Any]]] = Backends("thing")
    lazy.register("x", "plumb_lazy_backend:Maker.build")
    assert "plumb_lazy_backend" not in sys.modules
    assert lazy.create("x", {"a": 1}) == ("built", {"a": 1})
    assert "plumb_lazy_backend" in sys.modules
    monkeypatch.delitem(sys.modules, "plumb_lazy_backend")


def test_the_three_concerns_use_it(tmp_path: Path) -> None:
    assert vmm.backends() == ["qemu"]
    with pytest.raises(UsageError, match="unknown VM backend 'firecracker'; known: qemu"):
        vmm.create("firecracker")
    assert "filesystem" in storage.driver_names()
    driver = storage.create("filesystem", {"root": str(tmp_path)})
    assert driver.name == "filesystem"
    with pytest.raises(UsageError, match="unknown storage driver 's4'"):
        storage.create("s4", {})
    assert sinks.sink_schemes() == ["mqtt"]
    sink = sinks.create("broker-a", "mqtt://127.0.0.1:1")
    assert sink.name == "broker-a"
    sink.close()
    with pytest.raises(UsageError, match="unknown result sink URL scheme 'http'; known: mqtt"):
        sinks.create("web", "http://example.invalid/")
