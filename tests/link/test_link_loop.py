"""The link's threads on a real node, without a VM: the saved desired state is applied at start
while the controller is unreachable, an unreachable controller is logged once per outage, and a
heartbeat answer's desired state is saved before it is applied."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kit.pins import self_signed_cert
from ukedge.host import LocalNode, RunRequest
from ukedge.host.link import (
    DEPLOYMENT_LABEL,
    REPLICA_LABEL,
    REVISION_LABEL,
    ControllerLink,
    DesiredState,
    DesiredStore,
    Enrolment,
    HeartbeatReply,
    LinkClient,
)

CEILING_S = 60.0


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + CEILING_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _closed_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


@pytest.fixture
def enrolment(tmp_path: Path) -> Enrolment:
    pem = self_signed_cert(tmp_path, "controller")[2]
    return Enrolment(
        controller=f"https://127.0.0.1:{_closed_port()}",
        node_id="n-1",
        credential="cred",
        cert=pem,
        heartbeat_interval_s=0.05,
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "agent"
    path.mkdir()
    return path


@pytest.fixture
def offline_link(node: LocalNode, enrolment: Enrolment, data: Path) -> Iterator[ControllerLink]:
    link = ControllerLink(node, enrolment, data, accelerator="tcg")
    yield link
    link.stop()


def _marked(node: LocalNode, name: str, replica: str) -> None:
    labels = {DEPLOYMENT_LABEL: "web", REPLICA_LABEL: replica, REVISION_LABEL: "1"}
    node.manager.create(RunRequest(image="hello-c:1", name=name, labels=labels))


def test_the_saved_state_is_applied_at_start_without_the_controller(
    node: LocalNode, offline_link: ControllerLink, data: Path
) -> None:
    _marked(node, "web-r1", "r1")
    node.manager.create(RunRequest(image="hello-c:1", name="by-hand"))
    DesiredStore(data / "desired.json").save(DesiredState(generation=5))  # nothing for "web"
    offline_link.start()
    assert offline_link.reconciled.wait(CEILING_S)
    assert [i.name for i in node.list(all_instances=True)] == ["by-hand"]
    assert offline_link.applied_generation == 5
    assert not offline_link.connected


def test_an_outage_is_logged_once_and_the_link_keeps_trying(
    offline_link: ControllerLink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ukedge.host.link")
    offline_link.start()
    _wait(lambda: offline_link.failures >= 4, "four failed heartbeats")
    unreachable = [r for r in caplog.records if "controller unreachable" in r.getMessage()]
    assert len(unreachable) == 1
    assert unreachable[0].levelno == logging.WARNING


def test_a_desired_state_in_the_answer_is_saved_then_applied(
    node: LocalNode, enrolment: Enrolment, data: Path
) -> None:
    """The controller's side is a canned answer here (the link's logic only); the real one is
    in test_link_e2e.py."""
    _marked(node, "web-r1", "r1")
    _marked(node, "web-r2", "r2")
    sent: list[dict[str, object]] = []
    desired = {
        "generation": 8,
        "instances": [
            {
                "name": "web-r1",
                "deployment": "web",
                "replica": "r1",
                "revision": 1,
                "request": {"image": "hello-c:1"},
            }
        ],
    }

    def controller(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        give = desired if body["applied_generation"] != 8 else None
        return httpx.Response(200, json={"desired": give, "heartbeat_interval_s": 0.05})

    client = LinkClient(
        enrolment.controller,
        enrolment.cert,
        "n-1",
        "cred",
        transport=httpx.MockTransport(controller),
    )
    link = ControllerLink(node, enrolment, data, client=client, accelerator="tcg")
    try:
        reply = link.heartbeat_once()
        assert isinstance(reply, HeartbeatReply) and reply.desired is not None
        assert DesiredStore(data / "desired.json").load() == reply.desired
        first = sent[0]
        assert first["name"] == "edge-1" and first["applied_generation"] == 0
        assert {i["name"] for i in first["instances"]} == {"web-r1", "web-r2"}  # type: ignore[attr-defined]
        link.start()
        _wait(lambda: link.applied_generation == 8, "generation 8 applied")
        assert [i.name for i in node.list(all_instances=True)] == ["web-r1"]
        _wait(lambda: sent[-1]["applied_generation"] == 8, "a heartbeat reporting generation 8")
        assert link.connected
    finally:
        link.stop()


def test_the_agents_metrics_show_an_outage(node: LocalNode, offline_link: ControllerLink) -> None:
    from prometheus_client import generate_latest

    from ukedge.host.agent._metrics import AgentMetrics

    metrics = AgentMetrics(node, link=offline_link)
    offline_link.start()
    _wait(lambda: offline_link.failures >= 2, "two failed heartbeats")
    text = generate_latest(metrics.registry).decode()
    assert "ukedge_agent_controller_connected 0.0" in text
    assert "ukedge_agent_controller_heartbeat_failures" in text
    assert "ukedge_agent_controller_heartbeat_failures 0.0" not in text
    assert "ukedge_agent_desired_generation 0.0" in text
    assert "ukedge_agent_reconcile_errors 0.0" in text
