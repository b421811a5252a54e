"""Fixtures of the controller tests: each runs on SQLite and on PostgreSQL (see kit.controller)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.controller import Api, api_for, db_url, make_controller
from kit.hub import hub, hub_factory
from kit.postgres import postgres_cluster
from ukedge.controller import Controller

__all__ = ["api", "controller", "db_url", "hub", "hub_factory", "postgres_cluster"]


@pytest.fixture
def controller(tmp_path: Path, db_url: str) -> Iterator[Controller]:
    made = make_controller(tmp_path / "controller", db_url)
    yield made
    made.close()


@pytest.fixture
def api(controller: Controller) -> Iterator[Api]:
    with api_for(controller) as api:
        yield api
