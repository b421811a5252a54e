"""The controller link end to end: real host agents (``ukedge host serve`` processes), a real
hub and a real controller.

The ``controller`` fixture gives a running controller:

* ``controller.url``: ``https://127.0.0.1:PORT``;
* ``controller.cert``: its certificate (PEM);
* ``controller.admin_token``: the admin bearer token;
* ``controller.stop()`` / ``controller.start()``: make it unreachable / bring it back on the
  same port and data (``start`` returns once it answers).

It is a ``kit.link_controller.RestartableController`` (the fixtures are in
``tests/link/conftest.py``). Everything else goes through the controller's documented REST API
(docs/api.md, as ``kit.link_controller.AdminApi``) and the agent's.

What each test checks:

* ``test_enrol_heartbeat_and_reuse``: a join token enrols a node; the node shows Ready with
  its name, architecture, labels and capacity; the enrolment is kept 0600; a restarted agent
  reuses it without the token (same node id, one node); another --controller is refused.
* ``test_deploy_runs_labelled_instances_and_results_reach_the_controller``: a deployment's
  replica runs on the node as an instance labelled ukedge.deployment/replica/revision; the
  app's results arrive at GET /v1/results under the deployment, each (instance, seq) once.
* ``test_controller_outage_keeps_instances_and_loses_no_result``: with the controller
  stopped, the instance keeps running and results made meanwhile arrive after it returns,
  none lost, none twice; the instance is not restarted (same id, same start time).
* ``test_new_revision_replaces_and_delete_removes_never_touching_unlabelled``: a changed spec
  brings a revision-2 instance and removes the revision-1 one; deleting the deployment removes
  it; an instance started by hand on the node is untouched throughout.
* ``TestControllerSinkConformance``: the shared result-sink suite against the controller, with
  the two differences an idempotent, credential-keyed destination has (overridden below).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.sinks import ARRIVAL_TIMEOUT, ResultSinkSuite, deliver_until_up, make_records
from kit.agent import AgentProcess, running_agent
from kit.host import ukedge_cmd, wait_http
from kit.link_controller import (
    AdminApi,
    RestartableController,
    enrolled_agent,
    restartable_controller,
    web_deployment,
)
from kit.net import free_port
from kit.poll import until
from ukedge.host import InstanceState, run_request
from ukedge.host.link import ControllerSink, LinkClient, ensure_enrolment
from ukedge.host.results.sinks import ResultRecord, ResultSink

pytestmark = pytest.mark.vm

CEILING_S = 240.0
_wait = partial(until, ceiling=CEILING_S)


@pytest.fixture
def node(
    tmp_path: Path, hub: str, controller: RestartableController, api: AdminApi
) -> Iterator[AgentProcess]:
    args = ["--hub", hub, "--labels", "zone=a"]
    with enrolled_agent(tmp_path / "agent", "edge-1", controller, api, *args) as agent:
        yield agent


def _node_record(api: AdminApi) -> dict[str, Any]:
    [record] = api("GET", "/v1/nodes")
    return dict(record)


def _deploy(api: AdminApi, hub: str, port: int, **extra: Any) -> None:
    api("POST", "/v1/deployments", json=web_deployment(hub, port, **extra))


def _instance(agent: AgentProcess, revision: int | None = None) -> Any:
    def find() -> Any:
        for i in agent.client().list(all_instances=True):
            if (
                i.labels.get("ukedge.deployment") == "web"
                and i.state is InstanceState.RUNNING
                and (revision is None or i.labels.get("ukedge.revision") == str(revision))
            ):
                return i
        return None

    return _wait(find, f"a running instance of web (revision {revision})")


def _post_readings(port: int, count: int) -> None:
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=CEILING_S)
    for n in range(count):
        response = httpx.post(
            f"http://127.0.0.1:{port}/readings",
            json={"sensor": "t1", "value": float(n)},
            timeout=30,
        )
        assert response.status_code < 300, response.text


def _local_results(agent: AgentProcess, instance_id: str) -> list[Any]:
    text = b"".join(agent.client().follow(instance_id, "results", follow=False)).decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_enrol_heartbeat_and_reuse(
    tmp_path: Path, hub: str, controller: Any, api: AdminApi
) -> None:
    data = tmp_path / "agent"
    with running_agent(
        data,
        "--hub",
        hub,
        "--name",
        "edge-1",
        "--labels",
        "zone=a",
        "--controller",
        controller.url,
        "--join-token",
        api.token(),
    ) as agent:
        record = _wait(
            lambda: (
                (r := api("GET", "/v1/nodes"))
                and r[0]["status"] == "ready"
                and r[0]["last_heartbeat"]
                and r[0]["capacity_memory_mib"] > 0
                and r[0]
            ),
            "the node ready after its first heartbeat",
        )
        assert record["name"] == "edge-1" and record["labels"] == {"zone": "a"}
        assert record["capacity_memory_mib"] > 0 and record["capacity_vcpus"] > 0
        assert (data / "controller.json").stat().st_mode & 0o777 == 0o600
        agent.stop()
        agent.args = ["--hub", hub, "--name", "edge-1"]  # no --controller, no token
        agent.start()
        _wait(lambda: _node_record(api)["last_heartbeat"] != record["last_heartbeat"], "beat")
        assert _node_record(api)["id"] == record["id"]
        agent.stop()
    other = [*ukedge_cmd(), "host", "serve", "--data", str(data), "--addr", ""]
    proc = subprocess.run(
        [*other, "--controller", "https://127.0.0.1:1"], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "enrolled with the controller" in proc.stderr


def test_deploy_runs_labelled_instances_and_results_reach_the_controller(
    node: AgentProcess, api: AdminApi, hub: str
) -> None:
    port = free_port()
    _deploy(api, hub, port)
    instance = _instance(node, revision=1)
    assert instance.labels["ukedge.replica"]
    _post_readings(port, 5)
    got = _wait(lambda: api.results(deployment="web"), "results of web at the controller")
    assert {r["node_name"] for r in got} == {"edge-1"}
    keys = [(r["instance"], r["seq"]) for r in got]
    assert len(keys) == len(set(keys))


def test_controller_outage_keeps_instances_and_loses_no_result(
    node: AgentProcess, api: AdminApi, hub: str, controller: Any
) -> None:
    port = free_port()
    _deploy(api, hub, port)
    before = _instance(node, revision=1)
    controller.stop()
    try:
        _post_readings(port, 3)
        # Windows close while the controller is down: the app's results file grows.
        made = _wait(lambda: _local_results(node, before.id), "results made during the outage")
        _post_readings(port, 3)
        during = node.client().get(before.id)
        assert during.state is InstanceState.RUNNING
    finally:
        controller.start()

    def arrived() -> list[dict[str, Any]]:
        return [r for r in api.results(deployment="web") if r["instance"] == before.id]

    # Every line the app wrote during the outage reaches the controller, each once.
    _wait(lambda: len(arrived()) >= len(made), "the outage's results at the controller")
    seqs = [r["seq"] for r in arrived()]
    assert len(seqs) == len(set(seqs))
    assert set(range(1, len(made) + 1)) <= set(seqs)
    after = node.client().get(before.id)
    assert (after.id, after.started_at, after.runs) == (before.id, before.started_at, before.runs)


def test_new_revision_replaces_and_delete_removes_never_touching_unlabelled(
    node: AgentProcess, api: AdminApi, hub: str
) -> None:
    by_hand = node.client().run(run_request(image=f"{hub}/hello-c:1", name="by-hand"))
    port = free_port()
    _deploy(api, hub, port)
    first = _instance(node, revision=1)
    _deploy(api, hub, port, env={"WINDOW_SECONDS": "2"})
    second = _instance(node, revision=2)
    assert second.id != first.id
    # The rollout surges a new replica or replaces in place; either way revision 1 goes.
    _wait(
        lambda: (
            not [
                i
                for i in node.client().list(all_instances=True)
                if i.labels.get("ukedge.revision") == "1"
            ]
        ),
        "revision 1 removed",
    )
    api("DELETE", "/v1/deployments/web")
    _wait(
        lambda: (
            not [
                i for i in node.client().list(all_instances=True) if "ukedge.deployment" in i.labels
            ]
        ),
        "the deployment's instance removed",
    )
    assert node.client().get("by-hand").id == by_hand.id


# -- the shared result-sink suite against the controller ------------------------------------------


class ControllerPeer:
    """The suite's SinkPeer: what GET /v1/results holds, as envelopes in arrival order."""

    def __init__(self, controller: Any, api: AdminApi) -> None:
        self.controller = controller
        self.api = api

    def all_received(self, instance_id: str) -> list[dict[str, Any]]:
        out = []
        for r in self.api.results():
            if r["instance"] != instance_id:
                continue
            envelope = {"instance": r["instance"], "node": r["node_name"], "seq": r["seq"]}
            envelope["ts"] = r["ts"]
            if r.get("error") is None:
                envelope["result"] = r["result"]
            else:
                envelope.update(error=r["error"], raw=r["raw"])
            out.append(envelope)
        return out

    def received(self, instance_id: str, count: int, timeout: float) -> list[dict[str, Any]]:
        return list(
            _wait(
                lambda: (got := self.all_received(instance_id)) and len(got) >= count and got,
                f"{count} records of {instance_id}",
                ceiling=timeout,
            )
        )

    def stop(self) -> None:
        self.controller.stop()

    def start(self) -> None:
        self.controller.start()


class TestControllerSinkConformance(ResultSinkSuite):
    @pytest.fixture
    def peer(self, controller: Any, api: AdminApi) -> ControllerPeer:
        return ControllerPeer(controller, api)

    @pytest.fixture
    def sink(self, tmp_path: Path, controller: Any, api: AdminApi) -> Iterator[ResultSink]:
        enrolment = ensure_enrolment(
            tmp_path,
            controller.url,
            api.token(),
            name="edge-7",
            architecture="x86_64",
            labels={},
        )
        assert enrolment is not None
        client = LinkClient(
            enrolment.controller, enrolment.cert, enrolment.node_id, enrolment.credential, timeout=5
        )
        s = ControllerSink(client)
        yield s
        s.close()

    def test_envelope_carries_metadata_and_the_apps_value(
        self, sink: ResultSink, peer: ControllerPeer
    ) -> None:
        """The controller files records under the node whose credential sent them (edge-7
        here), not under the record's own node field."""
        record = ResultRecord("b2", "ignored", 3, 1_700_000_123.25, '{"temp": 21.5, "ok": true}')
        assert deliver_until_up(sink, [record]) == 3
        [msg] = peer.received("b2", 1, ARRIVAL_TIMEOUT)
        assert msg == {
            "instance": "b2",
            "node": "edge-7",
            "seq": 3,
            "ts": 1_700_000_123.25,
            "result": {"temp": 21.5, "ok": True},
        }

    def test_accepts_gaps_and_redelivery(self, sink: ResultSink, peer: ControllerPeer) -> None:
        """The controller stores by (node, instance, seq): a redelivered batch is confirmed
        again and stored once."""
        batch = make_records("d4", 5, 3, step=2)
        assert deliver_until_up(sink, batch) == 9
        assert sink.deliver(batch) == 9
        got = peer.received("d4", 3, ARRIVAL_TIMEOUT)
        assert [m["seq"] for m in got] == [5, 7, 9]


# -- a fleet: three agents, one lost and back ---------------------------------------------------

#: Short enough for a test, long enough for three agents heartbeating on a loaded machine.
_FLEET_TIMING = {"not_ready_after_s": 6.0, "grace_s": 4.0, "heartbeat_interval_s": 1.0}


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_controller(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[RestartableController]:
    with restartable_controller(request, tmp_path / "controller", **_FLEET_TIMING) as running:
        yield running


def _running_replicas(api: AdminApi) -> list[dict[str, Any]]:
    listed = api("GET", "/v1/replicas", params={"deployment": "web"})
    return [r for r in listed if r["state"] == "running"]


def _web_instances(agents: dict[str, AgentProcess]) -> dict[str, list[str]]:
    """Node name -> replica ids of the running instances of ``web`` there (what really runs)."""
    found: dict[str, list[str]] = {}
    for name, agent in agents.items():
        if agent.process is None or agent.process.poll() is not None:
            continue
        for i in agent.client().list(all_instances=True):
            if i.labels.get("ukedge.deployment") == "web" and i.state is InstanceState.RUNNING:
                found.setdefault(name, []).append(i.labels["ukedge.replica"])
    return found


def test_a_lost_node_is_replaced_and_its_return_leaves_no_duplicate(
    tmp_path: Path, hub: str, fleet_controller: RestartableController
) -> None:
    """Issue 10.10: three replicas spread over three agents; kill -9 of one agent moves its
    replica elsewhere after timeout + grace; the agent back, exactly three run, each replica
    once; a restarted controller keeps it all. On SQLite and on PostgreSQL."""
    api = AdminApi(fleet_controller)
    token = api.token()
    with contextlib.ExitStack() as stack:
        agents: dict[str, AgentProcess] = {}
        for n in range(3):
            args = ["--hub", hub, "--name", f"edge-{n}", "--labels", f"zone=z{n}"]
            agent = stack.enter_context(
                running_agent(
                    tmp_path / f"agent{n}",
                    *args,
                    "--controller",
                    fleet_controller.url,
                    "--join-token",
                    token,
                )
            )
            agents[f"edge-{n}"] = agent
        _wait(lambda: len(api("GET", "/v1/nodes")) == 3, "three nodes enrolled")
        api(
            "POST",
            "/v1/deployments",
            json={
                "name": "web",
                "image": f"{hub}/sensor-agg:1",
                "replicas": 3,
                "env": {"WINDOW_SECONDS": "1"},
                "placement": {"spread_by": "zone"},
            },
        )

        def spread() -> dict[str, list[str]] | None:
            placed = _web_instances(agents)
            return placed if sorted(len(v) for v in placed.values()) == [1, 1, 1] else None

        before = _wait(spread, "one running replica of web on each of the three nodes")
        victim = agents["edge-0"]
        lost = before["edge-0"][0]
        victim.kill9()

        def replaced() -> dict[str, list[str]] | None:
            placed = _web_instances(agents)  # the victim's own VM runs on, unseen
            ids = [r for replicas in placed.values() for r in replicas]
            return placed if len(ids) == 3 and lost not in ids else None

        _wait(replaced, "the lost replica replaced on the two remaining nodes")
        victim.start()

        def settled() -> dict[str, list[str]] | None:
            placed = _web_instances(agents)
            ids = [r for replicas in placed.values() for r in replicas]
            records = _running_replicas(api)
            if len(ids) == 3 and len(set(ids)) == 3 and len(records) == 3:
                return placed
            return None

        after = _wait(settled, "exactly three replicas once the lost node is back")
        assert len({r["replica"] for r in _running_replicas(api)}) == 3
        fleet_controller.stop()
        fleet_controller.start()
        restarted = AdminApi(fleet_controller)
        try:
            assert {n["name"] for n in restarted("GET", "/v1/nodes")} == {
                "edge-0",
                "edge-1",
                "edge-2",
            }
            kept = {
                r["replica"] for r in restarted("GET", "/v1/replicas", params={"deployment": "web"})
            }
            assert kept == {r for replicas in after.values() for r in replicas}
        finally:
            restarted.close()
    api.close()
