"""Moves between two real agents whose nodes serve runtimes from a shared read-only image
(``UKEDGE_SHARED_RUNTIME=pmem``): the image is not in the stream, the target maps its own copy of
the same digest, and the app's memory arrives whole. Real QEMU, real TLS channel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.agent import AgentProcess
from kit.migration import accepted, agg_hub, on, post_readings, two_agents
from kit.net import free_port
from ukedge.host import move_instance, run_request
from ukedge.host.migration import Mode, Step

pytestmark = pytest.mark.vm


__all__ = ["agg_hub"]


@pytest.fixture
def agents(
    tmp_path: Path, agg_hub: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    monkeypatch.setenv("UKEDGE_SHARED_RUNTIME", "pmem")  # the agents inherit it
    with two_agents(tmp_path, agg_hub) as pair:
        yield pair


def _machine_argv(agent: AgentProcess) -> str:
    (state,) = (agent.data / "instances").glob("*/vm/machine.json")
    return " ".join(json.loads(state.read_text())["argv"])


@pytest.mark.parametrize("mode", [Mode.SNAPSHOT, Mode.LIVE])
@pytest.mark.parametrize("prewarm", [False, True], ids=["booted", "clone"])
def test_a_machine_on_a_shared_runtime_moves_with_its_memory(
    agents: tuple[AgentProcess, AgentProcess], mode: Mode, prewarm: bool
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = a.client()
    if prewarm:
        source.prewarm(run_request(image="sensor-agg:1"))
    source.run(run_request(image="sensor-agg:1", name="agg", ports=on(port_a)))
    assert source.get("agg").restored is prewarm
    assert "virtio-pmem-pci" in _machine_argv(a)
    post_readings(port_a, 13)
    assert accepted(port_a, timeout=180) == 13
    status = move_instance(source, "agg", b.client(), mode=mode, ports=on(port_b))
    assert status.step is Step.DONE and status.error is None, status
    # The app's memory arrived (the image did not travel: the target mapped its own).
    assert accepted(port_b, timeout=180) == 13
    post_readings(port_b, 2)
    assert accepted(port_b, timeout=180) == 15
    assert "virtio-pmem-pci" in _machine_argv(b)
    assert source.list(all_instances=True) == []
