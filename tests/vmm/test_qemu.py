"""The QEMU backend against the shared conformance suite, plus QEMU-specific checks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ukedge import vmm
from ukedge.vmm import MachineBackend


def _load_suite() -> object:
    path = Path(__file__).parents[1] / "conformance" / "vmm.py"
    spec = importlib.util.spec_from_file_location("conformance_vmm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


conformance = _load_suite()
CONFIG: dict[str, object] = {}


@pytest.fixture(scope="module")
def backend() -> MachineBackend:
    return vmm.create("qemu", **CONFIG)


@pytest.fixture
def starter() -> list[str]:
    return conformance.starter_command("qemu", CONFIG)  # type: ignore[attr-defined, no-any-return]


class TestQemuConformance(conformance.MachineBackendSuite):  # type: ignore[attr-defined, misc, name-defined]
    """Runs every check of tests/conformance/vmm.py against the QEMU backend."""
