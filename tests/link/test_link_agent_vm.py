"""Offline autonomy with real VMs: an agent whose controller is unreachable runs its saved
desired state at start; a restarted agent keeps the running instance (same machine, not
restarted); a new revision replaces it and an empty state removes it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kit.pins import self_signed_cert
from ukedge import paths
from ukedge.errors import NoSuchInstanceError
from ukedge.host import Instance, InstanceState, RunRequest
from ukedge.host.agent import Agent, AgentSettings
from ukedge.host.link import DesiredInstance, DesiredState, DesiredStore, Enrolment
from ukedge.host.link._enrolment import FILE_NAME
from ukedge.host.link._files import write_private

pytestmark = pytest.mark.vm

CEILING_S = 240.0


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + CEILING_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _state(generation: int, revision: int | None) -> DesiredState:
    instances = []
    if revision is not None:
        instances.append(
            DesiredInstance(
                name="web-r1",
                deployment="web",
                replica="r1",
                revision=revision,
                request=RunRequest(image="sensor-agg:1", env={"REVISION": str(revision)}),
            )
        )
    return DesiredState(generation=generation, instances=instances)


@pytest.fixture
def data(tmp_path: Path, example_store: Path) -> Iterator[Path]:
    data = paths.private_dir(tmp_path / "agent")
    (data / "store").symlink_to(example_store)
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there: the controller is unreachable throughout
    enrolment = Enrolment(
        controller=f"https://127.0.0.1:{port}",
        node_id="n-1",
        credential="cred",
        cert=self_signed_cert(tmp_path, "controller")[2],
        heartbeat_interval_s=0.5,
    )
    write_private(data / FILE_NAME, enrolment.model_dump_json(), crash_name="test")
    yield data
    agent = _agent(data)
    try:
        for instance in agent.manager.list(all_instances=True):
            agent.manager.remove(instance.id, force=True)
    finally:
        agent.close()


def _agent(data: Path) -> Agent:
    return Agent(AgentSettings(data_dir=data, addr="", qemu_user="", name="edge-1"))


def _running(agent: Agent, name: str) -> Instance | None:
    try:
        instance = agent.node.get(name)
    except NoSuchInstanceError:
        return None
    return instance if instance.state is InstanceState.RUNNING else None


def test_offline_start_restart_keeps_running_then_replace_and_remove(data: Path) -> None:
    store = DesiredStore(data / "desired.json")
    store.save(_state(1, revision=1))

    agent = _agent(data)
    try:
        assert agent.link is not None
        assert "controller" in [s.name for s in agent.forwarder.sinks]
        agent.start()
        agent.start_link()
        _wait(lambda: _running(agent, "web-r1") is not None, "web-r1 running")
        first = agent.node.get("web-r1")
        assert first.labels["ukedge.revision"] == "1"
        assert first.env["REVISION"] == "1"
        _wait(lambda: agent.link is not None and agent.link.applied_generation == 1, "applied")
    finally:
        agent.close()

    # The agent restarts (still no controller): the instance is kept as it runs.
    agent = _agent(data)
    try:
        agent.start()
        assert agent.link is not None
        agent.link.reconciled.clear()
        agent.start_link()
        assert agent.link.reconciled.wait(CEILING_S)
        again = agent.node.get("web-r1")
        assert again.state is InstanceState.RUNNING
        assert (again.id, again.started_at, again.runs) == (first.id, first.started_at, first.runs)

        store.save(_state(2, revision=2))  # as a heartbeat answer would
        _wait(
            lambda: (i := _running(agent, "web-r1")) is not None and i.id != first.id,
            "revision 2 replacing revision 1",
        )
        assert agent.node.get("web-r1").labels["ukedge.revision"] == "2"
        assert [i.name for i in agent.node.list(all_instances=True)] == ["web-r1"]

        store.save(_state(3, revision=None))
        _wait(lambda: agent.node.list(all_instances=True) == [], "web-r1 removed")
    finally:
        agent.close()
