"""The leader's passes with the real planner, on SQLite and PostgreSQL: placement, nodes that go
quiet and come back, draining; the serving process; a standby taking over the lead."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit.controller import Api, Node, make_controller, running_controller, running_reports
from kit.net import free_port
from kit.postgres import PostgresCluster
from ukedge.controller import Controller
from ukedge.controller._loop import ReconcileLoop
from ukedge.host import InstanceState
from ukedge.host.link import (
    ENROL_PATH,
    DesiredInstance,
    EnrolReply,
    JoinToken,
    pinned_context,
)

IMAGE = "127.0.0.1:1/app@sha256:" + "c" * 64  # pinned; its registry is never reached


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(controller: Controller) -> Clock:
    manual = Clock(controller.clock())
    controller.clock = manual
    return manual


@pytest.fixture
def loop(controller: Controller, clock: Clock) -> Iterator[ReconcileLoop]:
    made = controller.make_loop()
    yield made
    made.leadership.release()


class Agentish:
    """A node that runs what it is told at once (what a real agent converges to)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.desired: list[DesiredInstance] = []

    def beat(self) -> None:
        reply = self.node.beat(running_reports(self.desired))
        if reply.desired is not None:
            self.desired = reply.desired.instances
            self.node.beat(running_reports(self.desired))


def _deploy(api: Api, **spec: Any) -> None:
    body = {"name": "web", "image": IMAGE, "memory_mib": 64, "vcpus": 1, **spec}
    r = api.admin.post("/v1/deployments", json=body)
    assert r.status_code == 200, r.text


def _placement(api: Api) -> dict[str, str]:
    return {r["replica"]: r["node_name"] for r in api.admin.get("/v1/replicas").json()}


def test_replicas_are_placed_and_reach_their_nodes(api: Api, loop: ReconcileLoop) -> None:
    nodes = [Agentish(api.enrol(f"edge-{i}")) for i in range(3)]
    for agent in nodes:
        agent.beat()
    _deploy(api, replicas=3)
    assert loop.run_once()
    placement = _placement(api)
    assert sorted(placement.values()) == ["edge-0", "edge-1", "edge-2"]  # spread
    for agent in nodes:
        agent.beat()
        [instance] = agent.desired
        assert placement[instance.replica] == agent.node.name
        assert instance.request.image == IMAGE
    rollout = api.admin.get("/v1/deployments/web").json()["rollout"]
    assert (rollout["state"], rollout["ready"]) == ("complete", 3)
    assert loop.run_once()
    assert _placement(api) == placement  # converged: a second pass changes nothing


def test_a_published_host_port_puts_one_replica_on_a_node(api: Api, loop: ReconcileLoop) -> None:
    """Two replicas publishing one host port cannot share a node: the second waits for a node
    (it would fail there for ever, "port in use")."""
    nodes = [Agentish(api.enrol(f"edge-{i}")) for i in range(2)]
    for agent in nodes:
        agent.beat()
    _deploy(api, replicas=3, ports=[{"host_port": 18080, "guest_port": 8080}])
    assert loop.run_once()
    assert sorted(_placement(api).values()) == ["edge-0", "edge-1"]
    assert loop.run_once()
    assert sorted(_placement(api).values()) == ["edge-0", "edge-1"], "the stored revision's ports"


def test_a_waiting_deployment_says_so_once_and_writes_nothing(
    api: Api,
    controller: Controller,
    loop: ReconcileLoop,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment no node has room for is planned again every pass: its event is logged when
    it first appears (and again once it reappears), and a pass that changes nothing opens no
    write transaction."""
    small = Agentish(api.enrol("small"))
    small.beat()  # 4096 MiB
    _deploy(api, replicas=1, memory_mib=6144)
    writes: list[None] = []
    write = controller.db.write

    def counted() -> Any:
        writes.append(None)
        return write()

    monkeypatch.setattr(controller.db, "write", counted)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert loop.run_once()
    waits = [r.getMessage() for r in caplog.records if "no node fits" in r.getMessage()]
    assert len(waits) == 1, waits
    assert writes == []

    big = Agentish(api.enrol("big"))
    big.node.memory_mib = 16384
    big.beat()
    writes.clear()
    assert loop.run_once()
    assert list(_placement(api).values()) == ["big"]
    assert len(writes) == 1  # the placement

    r = api.admin.post("/v1/deployments/web/scale", json={"replicas": 4})
    assert r.status_code == 200, r.text
    for _ in range(2):
        assert loop.run_once()
    waits = [r.getMessage() for r in caplog.records if "no node fits" in r.getMessage()]
    assert len(waits) == 2, waits  # waiting again (for room for the fourth): said again, once


def test_a_lost_node_is_replaced_and_the_surplus_goes_when_it_returns(
    api: Api, controller: Controller, loop: ReconcileLoop, clock: Clock
) -> None:
    one, two = Agentish(api.enrol("edge-1")), Agentish(api.enrol("edge-2"))
    one.beat()
    two.beat()
    _deploy(api, replicas=1)
    loop.run_once()
    holder, other = (
        (one, two)
        if _placement(api) and "edge-1" in _placement(api).values()
        else (
            two,
            one,
        )
    )
    holder.beat()
    [kept] = holder.desired
    settings = controller.settings
    clock.now += settings.not_ready_after_s + 1
    other.beat()
    loop.run_once()  # the holder goes NotReady; within the grace its replica stays
    assert api.admin.get(f"/v1/nodes/{holder.node.id}").json()["status"] == "not-ready"
    assert list(_placement(api).values()) == [holder.node.name]
    clock.now += settings.grace_s + 1
    other.beat()
    loop.run_once()
    assert sorted(_placement(api).values()) == sorted([holder.node.name, other.node.name])
    other.beat()
    assert len(other.desired) == 1

    holder.beat()  # back, still running the replica it had
    loop.run_once()
    assert _placement(api) == {kept.replica: holder.node.name}  # the replacement went
    holder.beat()
    assert [d.replica for d in holder.desired] == [kept.replica]


def test_a_new_leader_counts_silence_from_when_it_began_to_lead(
    api: Api, controller: Controller, clock: Clock
) -> None:
    """A controller restarted after a long outage finds every heartbeat old (agents back off
    while nobody answers): judged by them alone, the whole fleet would be lost in its first
    pass. It waits one NotReady timeout of its own first."""
    edge = Agentish(api.enrol("edge-1"))
    edge.beat()
    _deploy(api, replicas=1)
    first = controller.make_loop()
    try:
        first.run_once()
        edge.beat()
        [kept] = edge.desired
    finally:
        first.leadership.release()
    settings = controller.settings
    clock.now += settings.not_ready_after_s + settings.grace_s + 60  # the controller was down
    restarted = controller.make_loop()
    try:
        restarted.run_once()
        status = api.admin.get(f"/v1/nodes/{edge.node.id}").json()["status"]
        assert status == "ready"
        assert _placement(api) == {kept.replica: edge.node.name}
        edge.beat()  # the agent's next attempt gets through
        clock.now += settings.not_ready_after_s + 1
        edge.beat()
        restarted.run_once()
        assert api.admin.get(f"/v1/nodes/{edge.node.id}").json()["status"] == "ready"
        clock.now += settings.not_ready_after_s + 1  # now silent for a timeout of its own
        restarted.run_once()
        assert api.admin.get(f"/v1/nodes/{edge.node.id}").json()["status"] == "not-ready"
    finally:
        restarted.leadership.release()


def test_a_replica_that_finished_its_job_stays_completed(
    api: Api, controller: Controller, loop: ReconcileLoop, clock: Clock
) -> None:
    """Status 0 under restart "no": done. Neither replaced (which would run the job again and
    again under new ids) nor lost when its node goes quiet afterwards."""
    edge = Agentish(api.enrol("edge-1"))
    spare = Agentish(api.enrol("edge-2"))
    edge.beat()
    spare.beat()
    _deploy(api, replicas=1, restart={"name": "no"})
    loop.run_once()
    holder = edge if _placement(api) and "edge-1" in _placement(api).values() else spare
    holder.beat()
    [job] = holder.desired
    ended = running_reports([job])[0].model_copy(
        update={"state": InstanceState.EXITED, "exit_code": 0}
    )
    holder.node.beat([ended])
    loop.run_once()
    [row] = api.admin.get("/v1/replicas").json()
    assert (row["replica"], row["state"]) == (job.replica, "completed")
    rollout = api.admin.get("/v1/deployments/web").json()["rollout"]
    assert (rollout["state"], rollout["ready"]) == ("complete", 1)
    settings = controller.settings
    clock.now += settings.not_ready_after_s + settings.grace_s + 1  # the holder goes quiet
    other = spare if holder is edge else edge
    other.beat()
    loop.run_once()
    loop.run_once()
    [row] = api.admin.get("/v1/replicas").json()
    assert (row["replica"], row["state"]) == (job.replica, "completed")


def test_drain_moves_replicas_away(api: Api, loop: ReconcileLoop) -> None:
    one, two = Agentish(api.enrol("edge-1")), Agentish(api.enrol("edge-2"))
    one.beat()
    two.beat()
    _deploy(api, replicas=2)
    loop.run_once()
    one.beat()
    two.beat()
    assert api.admin.post("/v1/nodes/edge-1/drain").status_code == 200
    for _ in range(4):  # make-before-break: a replacement first, then the leaving one goes
        loop.run_once()
        one.beat()
        two.beat()
    assert sorted(_placement(api).values()) == ["edge-2", "edge-2"]
    assert one.desired == []


def test_a_failing_revision_is_rolled_back(api: Api, loop: ReconcileLoop) -> None:
    agents = [Agentish(api.enrol(f"edge-{i}")) for i in range(2)]
    for agent in agents:
        agent.beat()
    _deploy(api, replicas=2)
    loop.run_once()
    for agent in agents:
        agent.beat()
    _deploy(api, replicas=2, env={"BROKEN": "1"}, restart={"name": "no"})  # revision 2
    for _ in range(5):
        loop.run_once()
        for agent in agents:
            reply = agent.node.beat(running_reports(agent.desired))
            if reply.desired is not None:
                agent.desired = reply.desired.instances
            reports = running_reports(agent.desired)
            for report in reports:
                if report.revision == 2:  # the new revision's instances end at once
                    report.state = InstanceState.FAILED
            agent.node.beat(reports)
        state = api.admin.get("/v1/deployments/web").json()
        if state["rollout"]["state"] == "rolled-back":
            break
    assert state["revision"] == 1
    assert state["rollout"]["state"] == "rolled-back"
    assert "rolling back to revision 1" in state["rollout"]["message"]


def test_serve_runs_https_until_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "controller"
    port = free_port()
    code = (
        "from ukedge.controller import ControllerSettings, serve; "
        f"serve(ControllerSettings(data_dir={str(data)!r}, addr='127.0.0.1:{port}', "
        "log_format='text'))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        answer = None
        while answer is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                cert = (data / "tls.crt").read_text()
                answer = httpx.get(
                    f"https://127.0.0.1:{port}/healthz", verify=pinned_context(cert), timeout=5
                )
            except (OSError, httpx.HTTPError):
                time.sleep(0.2)
        assert answer is not None and answer.json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    # uvicorn shuts down, then re-raises the signal it caught (as every ukedge server ends).
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "controller serving on https://" in output


def test_a_standby_takes_the_lead(tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.create_database()
    data = tmp_path / "controller"
    first = make_controller(data, url, tick_s=0.1)
    second = make_controller(data, url, tick_s=0.1)
    with contextlib.ExitStack() as both, contextlib.ExitStack() as leader:
        both.callback(first.close)
        both.callback(second.close)
        leader.enter_context(running_controller(first, run_loop=True))
        assert first.loop is not None
        _wait(lambda: first.loop is not None and first.loop.passes > 0, "first to lead")
        both.enter_context(running_controller(second, run_loop=True))
        assert second.loop is not None
        seen = first.loop.passes
        _wait(lambda: first.loop is not None and first.loop.passes > seen + 10, "more passes")
        assert second.loop.passes == 0  # a standby serves the API but does not plan
        leader.close()  # the leader stops: its session ends, the lock is free
        _wait(lambda: second.loop is not None and second.loop.passes > 0, "the standby to lead")


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.02)


def test_the_served_loop_places_what_is_deployed(tmp_path: Path, db_url: str) -> None:
    controller = make_controller(tmp_path / "controller", db_url, tick_s=0.1)
    try:
        with (
            running_controller(controller, run_loop=True) as running,
            running.client() as admin,
            running.client(admin=False) as anon,
        ):
            token = JoinToken.parse(admin.post("/v1/tokens", json={}).json()["token"])
            r = anon.post(
                ENROL_PATH,
                json={"token": token.credential, "name": "edge-1", "architecture": "amd64"},
            )
            node = Node(anon, "edge-1", EnrolReply.model_validate(r.json()))
            node.beat()
            body = {"name": "web", "image": IMAGE, "memory_mib": 64, "vcpus": 1, "replicas": 2}
            assert admin.post("/v1/deployments", json=body).status_code == 200
            desired: list[DesiredInstance] = []

            def placed() -> bool:
                reply = node.beat()
                if reply.desired is not None:
                    desired[:] = reply.desired.instances
                return len(desired) == 2

            _wait(placed, "the loop to place both replicas on the node")
            assert {d.deployment for d in desired} == {"web"}
            assert admin.get("/healthz").json()["leader"] is True
    finally:
        controller.close()


def test_a_real_agent_enrols_and_reports(tmp_path: Path, db_url: str) -> None:
    """``ukedge host serve --controller --join-token`` against this controller (no VM runs)."""
    from kit.agent import running_agent

    controller = make_controller(tmp_path / "controller", db_url, tick_s=0.2)
    try:
        with running_controller(controller, run_loop=True) as running, running.client() as admin:
            token = admin.post("/v1/tokens", json={"uses": 1}).json()["token"]
            args = ("--name", "edge-real", "--controller", running.url, "--join-token", token)
            with running_agent(tmp_path / "agent", *args):

                def reported() -> bool:
                    nodes = admin.get("/v1/nodes").json()
                    return bool(nodes) and nodes[0]["capacity_memory_mib"] > 0

                _wait(reported, "the agent to enrol and heartbeat", timeout=120)
                [node] = admin.get("/v1/nodes").json()
                assert node["name"] == "edge-real" and node["status"] == "ready"
                [info] = admin.get("/v1/tokens").json()
                assert info["nodes_enrolled"] == 1 and info["uses_left"] == 0
    finally:
        controller.close()
