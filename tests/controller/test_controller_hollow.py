"""Hollow nodes (bench/fleet.py's fleet) against the real controller served over HTTPS: they
enrol with a join token, get placed replicas through their heartbeats and report them running;
a hollow node that stops heartbeating loses its replicas to the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit.controller import RunningController, make_controller, running_controller
from ukedge.host.link import HOLLOW_ACCELERATOR, HollowFleet, HollowNode, JoinToken, NodeResources

IMAGE = "127.0.0.1:1/app@sha256:" + "c" * 64  # pinned; its registry is never reached


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[RunningController]:
    controller = make_controller(
        tmp_path / "controller",
        db_url,
        heartbeat_interval_s=0.2,
        tick_s=0.1,
        not_ready_after_s=1.0,
        grace_s=0.0,
    )
    try:
        with running_controller(controller, run_loop=True) as running:
            yield running
    finally:
        controller.close()


def _replicas(admin: httpx.Client) -> list[dict[str, Any]]:
    r = admin.get("/v1/replicas")
    assert r.status_code == 200, r.text
    return list(r.json())


async def _until(admin: httpx.Client, check: Any, what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = await asyncio.to_thread(_replicas, admin)
        if check(rows):
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within 60 s; replicas: {rows}")


def _all_running(count: int, nodes: set[str]) -> Any:
    """``count`` replicas running on ``nodes`` (a dead node's are kept, lost, beside them)."""

    def check(rows: list[dict[str, Any]]) -> bool:
        running = [r for r in rows if r["state"] == "running"]
        return len(running) == count and all(r["node_name"] in nodes for r in running)

    return check


def test_hollow_nodes_run_their_replicas_and_lose_them_when_they_stop(
    served: RunningController,
) -> None:
    with served.client() as admin:
        r = admin.post("/v1/tokens", json={"description": "hollow", "uses": 3})
        assert r.status_code == 201, r.text
        token = JoinToken.parse(r.json()["token"])

        async def scenario() -> None:
            names = {"hollow-0", "hollow-1", "hollow-2"}
            capacity = NodeResources(memory_mib=4096, vcpus=16)
            async with HollowFleet.for_token(served.url, token) as fleet:
                for name in sorted(names):
                    await fleet.enrol(HollowNode(name, capacity=capacity), token)
                fleet.start()
                deadline = time.monotonic() + 60  # capacity known: each node has beaten once
                while any(n.beats == 0 for n in fleet.nodes) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                body = {"name": "web", "image": IMAGE, "memory_mib": 64, "vcpus": 1}
                r = admin.post("/v1/deployments", json={**body, "replicas": 6})
                assert r.status_code == 200, r.text
                rows = await _until(admin, _all_running(6, names), "6 replicas running")
                assert {r["node_name"] for r in rows} == names  # spread
                for node in fleet.nodes:
                    held = {(d.deployment, d.replica) for d in node.desired.instances}
                    mine = {("web", r["replica"]) for r in rows if r["node_name"] == node.name}
                    assert held == mine

                dead = fleet.nodes[0]
                await fleet.stop([dead])
                alive = names - {dead.name}
                rows = await _until(admin, _all_running(6, alive), "replicas re-placed")
                assert {r["state"] for r in rows if r["node_name"] == dead.name} == {"lost"}
            assert fleet.errors == 0

        asyncio.run(scenario())
        listed = admin.get("/v1/nodes").json()
        assert {n["accelerator"] for n in listed} == {HOLLOW_ACCELERATOR}
