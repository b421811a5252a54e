"""Mixed fleets: a real controller, a real hub and two real host agents (``ukedge host serve``
processes), one of them set to ``--platform linux/arm64``.

One deployment of a multi-platform image (an OCI index of a linux/amd64 and a linux/arm64
manifest) places replicas on both nodes; each node reports its platform and accelerators and
pulls only its own platform's manifest and blobs. The images here are synthetic (random
layers): this test is about placement and pulls, not boots, so it needs no VM; the VM test
that boots both platforms is in ``test_link_platforms_vm.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit.agent import AgentProcess, running_agent
from kit.hub import RunningHub, start_hub
from kit.link_controller import RestartableController
from kit.postgres import PostgresCluster, postgres_cluster
from kit.registry import make_index
from ukedge.host.link import pinned_context
from ukedge.image import ImageStore
from ukedge.registry import push

__all__ = ["postgres_cluster"]  # the fixture, for the PostgreSQL run

CEILING_S = 120.0


def _wait(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + CEILING_S
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(params=["sqlite", "postgresql"])
def controller(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RestartableController]:
    settings: dict[str, Any] = {}
    if request.param == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        settings["db"] = cluster.create_database()
    running = RestartableController(tmp_path / "controller", **settings)
    yield running
    running.stop()


@pytest.fixture
def api(controller: RestartableController) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=controller.url,
        verify=pinned_context(controller.cert),
        headers={"authorization": f"Bearer {controller.admin_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    running = start_hub(tmp_path / "hub")
    yield running
    running.stop()


def _call(api: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = api.request(method, path, **kwargs)
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def _agent(
    tmp_path: Path, name: str, controller: RestartableController, api: httpx.Client, *extra: str
) -> Any:
    token = _call(api, "POST", "/v1/tokens", json={"description": name})["token"]
    args = ["--name", name, "--controller", controller.url, "--join-token", token, *extra]
    return running_agent(tmp_path / name, *args)


def _held_manifests(agent: AgentProcess, digests: dict[str, str]) -> set[str]:
    blobs = agent.data / "store" / "blobs" / "sha256"
    return {k for k, d in digests.items() if (blobs / d.removeprefix("sha256:")).exists()}


def test_one_deployment_spreads_over_an_amd64_and_an_arm64_node(
    tmp_path: Path, controller: RestartableController, api: httpx.Client, hub: RunningHub
) -> None:
    addr = hub.url.removeprefix("http://")
    source = ImageStore(tmp_path / "source")
    digests = make_index(source, "multi:1", kernel=64 << 10, app=16 << 10)
    push(source, "multi:1", f"{addr}/multi:1")
    with source.lease():
        source.add_manifest(source.read_blob(digests["amd64"]), "amd64-only:1")
    push(source, "amd64-only:1", f"{addr}/amd64-only:1")

    with (
        _agent(tmp_path, "edge-x86", controller, api) as x86,
        _agent(tmp_path, "edge-arm", controller, api, "--platform", "linux/arm64") as arm,
    ):

        def ready() -> dict[str, Any] | None:
            nodes = {n["name"]: n for n in _call(api, "GET", "/v1/nodes")}
            ok = len(nodes) == 2 and all(n["status"] == "ready" for n in nodes.values())
            return nodes if ok and all(n["accelerators"] for n in nodes.values()) else None

        nodes = _wait(ready, "both nodes Ready with their accelerators")
        assert nodes["edge-x86"]["architecture"] == "x86_64"
        assert nodes["edge-arm"]["architecture"] == "aarch64"
        # The x86_64 host emulates arm64 (it has qemu-system-aarch64 here), never natively.
        assert nodes["edge-arm"]["accelerators"]["linux/arm64"] == "tcg"
        assert nodes["edge-arm"]["accelerator"] == "tcg"
        assert set(nodes["edge-x86"]["accelerators"]) >= {"linux/amd64"}

        spec = {"name": "multi", "image": f"{addr}/multi:1", "replicas": 2}
        deployed = _call(api, "POST", "/v1/deployments", json=spec)
        assert deployed["revision"] == 1

        def placed() -> set[str] | None:
            rows = _call(api, "GET", "/v1/replicas", params={"deployment": "multi"})
            where = {r["node_id"] for r in rows if r["node_id"]}
            return where if len(where) == 2 else None

        by_id = {n["id"]: n["name"] for n in nodes.values()}
        assert {by_id[n] for n in _wait(placed, "replicas on both nodes")} == {
            "edge-x86",
            "edge-arm",
        }
        [revision] = _call(api, "GET", "/v1/deployments/multi/revisions")
        assert revision["image_digest"].endswith(digests["index"])  # one pin: the index
        assert revision["platforms"] == ["linux/amd64", "linux/arm64/v8"]

        # Each node pulls the index and its own platform only.
        _wait(lambda: _held_manifests(x86, digests) >= {"index", "amd64"}, "the amd64 pull")
        _wait(lambda: _held_manifests(arm, digests) >= {"index", "arm64"}, "the arm64 pull")
        assert "arm64" not in _held_manifests(x86, digests)
        assert "amd64" not in _held_manifests(arm, digests)

        # A single-platform amd64 image goes to the amd64 node only.
        spec = {"name": "x86only", "image": f"{addr}/amd64-only:1", "replicas": 2}
        _call(api, "POST", "/v1/deployments", json=spec)

        def placed_single() -> list[str] | None:
            rows = _call(api, "GET", "/v1/replicas", params={"deployment": "x86only"})
            where = [r["node_id"] for r in rows if r["node_id"]]
            return where if len(where) == 2 else None

        assert {by_id[n] for n in _wait(placed_single, "amd64-only replicas")} == {"edge-x86"}

        # Architectures through either name; one the image lacks is refused up front.
        spec = {
            "name": "armonly",
            "image": f"{addr}/multi:1",
            "replicas": 1,
            "placement": {"architectures": ["aarch64"]},
        }
        _call(api, "POST", "/v1/deployments", json=spec)

        def placed_arm() -> list[str] | None:
            rows = _call(api, "GET", "/v1/replicas", params={"deployment": "armonly"})
            return [r["node_id"] for r in rows if r["node_id"]] or None

        assert [by_id[n] for n in _wait(placed_arm, "the arm64 replica")] == ["edge-arm"]
        refused = api.post(
            "/v1/deployments",
            json={
                "name": "nope",
                "image": f"{addr}/amd64-only:1",
                "placement": {"architectures": ["linux/arm64"]},
            },
        )
        assert refused.status_code == 422 and "linux/amd64 only" in refused.text
        bad = api.post(
            "/v1/deployments",
            json={
                "name": "bad",
                "image": f"{addr}/multi:1",
                "placement": {"architectures": ["mips"]},
            },
        )
        assert bad.status_code == 422 and "mips" in bad.text
