"""Fixtures of the registry client tests (helpers live in registry_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_fixtures import Distribution, run_distribution


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[Distribution]:
    """A fresh docker-registry on 127.0.0.1:<free port>, storage in the test's tmp dir."""
    with run_distribution(tmp_path / "distribution") as registry:
        yield registry
