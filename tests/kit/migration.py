"""Two real agents on this machine and sensor-agg to move between them: the set-up every
migration VM test shares (``tests/host/test_migration_vm.py``, the shared-runtime moves, …).

``agg_hub`` is a module-scoped fixture (import it into the test module and name it in
``__all__``): a hub with ``sensor-agg:1`` pushed, given as its ``HOST:PORT``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kit.agent import AgentProcess, push_examples, running_agent
from kit.host import wait_http
from kit.hub import RunningHub, start_hub
from ukedge.host import PortMapping
from ukedge.image import ImageStore

__all__ = ["accepted", "agg_hub", "on", "two_agents"]


@pytest.fixture(scope="module")
def agg_hub(tmp_path_factory: pytest.TempPathFactory, example_store: Path) -> Iterator[str]:
    running: RunningHub = start_hub(tmp_path_factory.mktemp("hub"))
    addr = running.url.removeprefix("http://")
    push_examples(ImageStore(example_store), addr, "sensor-agg:1")
    yield addr
    running.stop()


@contextlib.contextmanager
def two_agents(
    work: Path, hub: str, *target_args: str
) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """Agents ``node-a`` and ``node-b`` (``target_args`` added to b's command) pulling from
    ``hub``, their data under ``work/a`` and ``work/b``."""
    with (
        running_agent(work / "a", "--hub", hub, "--name", "node-a") as a,
        running_agent(work / "b", "--hub", hub, "--name", "node-b", *target_args) as b,
    ):
        yield a, b


def on(port: int) -> list[PortMapping]:
    """The app's port 8080 published on ``port`` of the host."""
    return [PortMapping(host_port=port, guest_port=8080)]


def accepted(port: int, timeout: float = 120) -> int:
    """How many readings the sensor-agg on ``port`` has counted (waits for it to answer)."""
    doc: dict[str, Any] = wait_http(f"http://127.0.0.1:{port}/healthz", timeout=timeout).json()
    return int(doc["accepted"])
