"""Moves the controller drives, end to end: a real controller, two real host agents
(``ukedge host serve --migration-host``), real QEMU, and the CLI as an operator runs it.

* ``test_drain_with_migrate_moves_the_replica_with_its_memory``: sensor-agg, one replica, with
  readings counted; ``ukedge node drain NODE --migrate`` moves it to the other node: the same
  instance id, every reading still counted, the results numbered on at the centre without gap
  or duplicate, the controller's view (``ukedge replicas``, ``ukedge moves``) showing the new
  node and address; neither reconciler undid the move (no instance made again on the source,
  none removed on the target) and the source no longer runs it. On SQLite and PostgreSQL.
* ``test_holds_outlive_an_outage_and_restarts_of_both_agents``: the controller goes away
  mid-move and both agents are killed and started again before it is back: the source makes
  no copy again, the target removes nothing, and the move is recorded once it returns.
* ``test_migrate_to_a_node_name_goes_through_the_controller``: ``ukedge migrate INSTANCE --to
  NODE`` (live) moves a replica of a node that is not draining, and a refused move names why.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit.agent import AgentProcess, running_agent
from kit.host import ukedge_cmd, wait_http
from kit.link_controller import (
    AdminApi,
    RestartableController,
    restartable_controller,
    web_deployment,
)
from kit.net import free_port
from kit.poll import until
from ukedge.host import Instance, InstanceState

pytestmark = pytest.mark.vm

CEILING_S = 300.0
_wait = partial(until, ceiling=CEILING_S, every=0.3)


class Fleet:
    """A controller and two agents that take part in moves, and the operator's tools."""

    def __init__(
        self, controller: RestartableController, api: AdminApi, agents: dict[str, AgentProcess]
    ) -> None:
        self.controller = controller
        self.api = api
        self.agents = agents
        cert = controller.data / "operator.crt"
        cert.write_text(controller.cert)
        self.env = {
            **os.environ,
            "UKEDGE_CONTROLLER": controller.url,
            "UKEDGE_CONTROLLER_TOKEN": controller.admin_token,
            "UKEDGE_CONTROLLER_CERT": str(cert),
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*ukedge_cmd(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CEILING_S,
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def replica(self) -> dict[str, Any]:
        """The one replica of web (empty until the reconciler has placed it)."""
        records = self.api.get("/v1/replicas", deployment="web")
        assert len(records) <= 1, records
        return dict(records[0]) if records else {}

    def instance(self, node: str) -> Instance | None:
        for i in self.agents[node].client().list(all_instances=True):
            if i.labels.get("ukedge.deployment") == "web":
                return i
        return None


@pytest.fixture
def agent_args() -> tuple[str, ...]:
    """More arguments for both agents (a test parametrizes ``agent_args`` to change them)."""
    return ()


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, hub: str, agent_args: tuple[str, ...]
) -> Iterator[Fleet]:
    """On SQLite, or on PostgreSQL for a test parametrized ``indirect`` with "postgresql"."""
    # A long grace: agents back off up to 30 s while the controller is away, and a node silent
    # for longer than NotReady + grace has its replicas replaced, which is not under test here.
    settings: dict[str, Any] = {"grace_s": 300.0}
    with restartable_controller(request, tmp_path / "controller", **settings) as controller:
        api = AdminApi(controller)
        token = api.token("moves")
        with contextlib.ExitStack() as stack:
            agents = {
                name: stack.enter_context(
                    running_agent(
                        tmp_path / name,
                        *("--hub", hub, "--name", name, "--migration-host", "127.0.0.1"),
                        *("--controller", controller.url, "--join-token", token),
                        *agent_args,
                    )
                )
                for name in ("edge-a", "edge-b")
            }
            fleet = Fleet(controller, api, agents)
            _wait(
                lambda: (
                    [n["migration_host"] for n in fleet.api.get("/v1/nodes")]
                    == ["127.0.0.1", "127.0.0.1"]
                ),
                "two nodes that take part in moves",
            )
            yield fleet
            fleet.api.close()
            for agent in agents.values():
                agent.kill_machines()


def _deploy(fleet: Fleet, hub: str, port: int) -> tuple[str, Instance]:
    """sensor-agg, one replica, its port 8080 on ``port``: the node it runs on and the instance."""
    r = fleet.api.client.post("/v1/deployments", json=web_deployment(hub, port))
    assert r.status_code in (200, 201), r.text
    record = _wait(lambda: (r := fleet.replica()).get("state") == "running" and r, "web running")
    node = record["node_name"]
    instance = fleet.instance(node)
    assert instance is not None and instance.state is InstanceState.RUNNING
    return node, instance


def _post(port: int, n: int) -> None:
    readings = [{"sensor": "t1", "value": float(i)} for i in range(n)]
    r = httpx.post(f"http://127.0.0.1:{port}/readings", json=readings, timeout=30)
    assert r.status_code == 200, r.text


def _accepted(port: int) -> int:
    doc: dict[str, Any] = wait_http(f"http://127.0.0.1:{port}/healthz", timeout=CEILING_S).json()
    return int(doc["accepted"])


def _centre(fleet: Fleet, instance_id: str) -> list[dict[str, Any]]:
    return [r for r in fleet.api.results(deployment="web") if r["instance"] == instance_id]


def _events(agent: AgentProcess, name: str) -> list[str]:
    """The actions of every instance named ``name`` on the agent (a copy made again would
    have another id, the same name)."""
    lines = (agent.data / "instances" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return [e["action"] for e in events if e.get("name") == name]


def _moved(fleet: Fleet, source: str, target: str, before: Instance) -> dict[str, Any]:
    """Once the controller has the replica on ``target`` with the port it reported there and
    the source runs it no more: the replica's record."""

    def done() -> dict[str, Any] | None:
        record = fleet.replica()
        arrived = fleet.instance(target)
        if (
            record.get("node_name") == target
            and record["state"] == "running"
            and record["ports"]
            and arrived is not None
            and arrived.id == before.id
            and fleet.instance(source) is None
        ):
            return record
        return None

    return dict(_wait(done, f"web moved from {source} to {target}"))


@pytest.mark.parametrize("fleet", ["sqlite", "postgresql"], indirect=True)
def test_drain_with_migrate_moves_the_replica_with_its_memory(fleet: Fleet, hub: str) -> None:
    port = free_port()
    source, before = _deploy(fleet, hub, port)
    target = next(name for name in fleet.agents if name != source)
    _post(port, 40)
    assert _accepted(port) == 40

    # A few windows closed and delivered to the centre before the move.
    def delivered() -> bool:
        _post(port, 1)
        return len(_centre(fleet, before.id)) >= 3

    _wait(delivered, "results of web at the centre")
    counted = _accepted(port)

    drained = fleet.cli("node", "drain", source, "--migrate", "--mode", "snapshot", "--json")
    [record] = json.loads(drained.stdout)
    assert (record["draining"], record["drain_migrate"]) == (True, "snapshot")
    listed = json.loads(fleet.cli("node", "ls", "--json").stdout)
    assert {n["name"]: n["drain_migrate"] for n in listed} == {source: "snapshot", target: None}

    moved = _moved(fleet, source, target, before)
    [mapping] = moved["ports"]
    new_port = mapping["host_port"]
    assert new_port != port  # one machine: the source held the port while the move ran
    # The app's memory came along: every reading counted before the drain, and it counts on.
    assert _accepted(new_port) == counted
    _post(new_port, 5)
    assert _accepted(new_port) == counted + 5

    # The controller's view, as the operator reads it.
    [shown] = json.loads(fleet.cli("replicas", "--deployment", "web", "--json").stdout)
    assert (shown["node_name"], shown["ports"]) == (target, moved["ports"])
    table = fleet.cli("replicas", "--deployment", "web").stdout
    assert target in table and f"127.0.0.1:{new_port}->8080" in table
    [move] = json.loads(fleet.cli("moves", "--all", "--json").stdout)
    assert (move["state"], move["source_name"], move["target_name"], move["attempt"]) == (
        "done",
        source,
        target,
        1,
    )
    assert "ticket" not in json.dumps(move)

    # Results: the source's numbered up to the pause, the target's on from there; at the
    # centre each number once and none missing.
    def numbered_on() -> list[dict[str, Any]] | None:
        _post(new_port, 1)
        records = _centre(fleet, before.id)
        return records if any(r["node_name"] == target for r in records) else None

    records = _wait(numbered_on, "results of web from its new node at the centre")
    seqs = sorted(r["seq"] for r in records)
    assert seqs == list(range(1, len(seqs) + 1))
    first_there = min(r["seq"] for r in records if r["node_name"] == target)
    assert {r["node_name"] for r in records if r["seq"] < first_there} == {source}

    # Neither reconciler undid the move: the source made no new instance once the move was
    # under way (none of web runs there), the target removed nothing it received.
    events_a = _events(fleet.agents[source], before.name)
    assert "migrate-out" in events_a, events_a
    after_out = events_a[events_a.index("migrate-out") + 1 :]
    assert "create" not in after_out and "start" not in after_out, events_a
    assert fleet.instance(source) is None
    events_b = _events(fleet.agents[target], before.name)
    assert events_b[0] == "migrate-in" and "remove" not in events_b, events_b
    undone = fleet.api.get("/v1/replicas", deployment="web")
    assert [r["node_name"] for r in undone] == [target]  # one replica, no replacement


def test_migrate_to_a_node_name_goes_through_the_controller(fleet: Fleet, hub: str) -> None:
    port = free_port()
    source, before = _deploy(fleet, hub, port)
    target = next(name for name in fleet.agents if name != source)
    _post(port, 12)
    refused = fleet.cli("migrate", before.name, "--to", source, check=False)
    assert refused.returncode != 0 and f"runs on node {source} already" in refused.stderr
    wrong = fleet.cli("migrate", before.name, "--to", target, "-p", "1:2", check=False)
    assert wrong.returncode != 0 and "--publish" in wrong.stderr

    done = fleet.cli("migrate", before.name, "--to", target, "--mode", "live")
    assert done.stdout.strip() == before.name
    assert f"to {target} (live)" in done.stderr
    moved = _moved(fleet, source, target, before)
    new_port = moved["ports"][0]["host_port"]
    assert _accepted(new_port) == 12
    assert f"127.0.0.1:{new_port}->8080" in done.stderr


#: The target's QEMU keeps root: QEMU 7.2 takes userfaultfd (post-copy's receiving side)
#: unprivileged only where vm.unprivileged_userfaultfd is 1.
@pytest.mark.parametrize("agent_args", [("--qemu-user", "")])
def test_a_postcopy_move_through_the_controller(fleet: Fleet, hub: str) -> None:
    """`ukedge migrate REPLICA --to NODE --mode live --postcopy`: the controller records and
    orders it, the source agent takes the order (an agent that refused the field would fail
    the move), and the replica arrives with its memory."""
    port = free_port()
    source, before = _deploy(fleet, hub, port)
    target = next(name for name in fleet.agents if name != source)
    _post(port, 12)
    done = fleet.cli("migrate", before.name, "--to", target, "--mode", "live", "--postcopy")
    assert done.stdout.strip() == before.name and f"to {target} (live)" in done.stderr
    [record] = json.loads(fleet.cli("moves", "--all", "--json").stdout)
    assert (record["state"], record["mode"], record["postcopy"]) == ("done", "live", True)
    moved = _moved(fleet, source, target, before)
    assert _accepted(moved["ports"][0]["host_port"]) == 12


def _moving_out(agent: AgentProcess) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{agent.url}/v1/migrations",
        headers={"authorization": f"Bearer {agent.token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return list(r.json())


def test_holds_outlive_an_outage_and_restarts_of_both_agents(fleet: Fleet, hub: str) -> None:
    """The controller goes away while the source moves the replica, so neither node can learn
    that it was recorded on the target; both agents are then killed and started again. The
    source must not make the replica again (its saved desired state still lists it), the
    target must not remove the one that arrived (its saved state does not list it yet); once
    the controller is back the move is recorded and the app has kept every reading."""
    port = free_port()
    source, before = _deploy(fleet, hub, port)
    target = next(name for name in fleet.agents if name != source)
    _post(port, 20)
    fleet.cli("node", "drain", source, "--migrate", "--mode", "snapshot")
    _wait(lambda: _moving_out(fleet.agents[source]), "the source moving web")
    fleet.controller.stop()
    arrived = _wait(lambda: fleet.instance(target), "web arrived on the target")
    _wait(lambda: fleet.instance(source) is None, "web gone from the source")
    assert arrived.id == before.id
    for name in (source, target):
        fleet.agents[name].kill9()
        fleet.agents[name].start()
    # What the test is about: both holds are in force, kept across the restarts.
    book_a = json.loads((fleet.agents[source].data / "moves.json").read_text())
    book_b = json.loads((fleet.agents[target].data / "moves.json").read_text())
    assert [(o["instance"], o["until"]) for o in book_a["outgoing"]] == [(before.name, None)]
    assert [a["instance"] for a in book_b["arrivals"]] == [before.name]
    fleet.controller.start()
    fleet.api.close()
    fleet.api = AdminApi(fleet.controller)
    moved = _moved(fleet, source, target, before)
    assert _accepted(moved["ports"][0]["host_port"]) == 20
    [move] = fleet.api.get("/v1/moves")
    assert (move["state"], move["attempt"]) == ("done", 1)
    after_out = _events(fleet.agents[source], before.name)
    after_out = after_out[after_out.index("migrate-out") + 1 :]
    assert "create" not in after_out and "start" not in after_out, after_out
    events_b = _events(fleet.agents[target], before.name)
    assert events_b[0] == "migrate-in" and "remove" not in events_b, events_b
