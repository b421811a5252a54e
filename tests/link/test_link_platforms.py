"""Mixed fleets: a real controller, a real hub and two real host agents (``ukedge host serve``
processes), one of them set to ``--platform linux/arm64``.

One deployment of a multi-platform image (an OCI index of a linux/amd64 and a linux/arm64
manifest) places replicas on both nodes; each node reports its platform and accelerators and
pulls only its own platform's manifest and blobs. The images here are synthetic (random
layers): this test is about placement and pulls, not boots, so it needs no VM; the VM test
that boots both platforms is in ``test_link_platforms_vm.py``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from kit.agent import AgentProcess
from kit.hub import RunningHub
from kit.link_controller import AdminApi, RestartableController, enrolled_agent
from kit.poll import until
from kit.registry import make_index
from ukedge.image import ImageStore
from ukedge.registry import push

CEILING_S = 120.0
_wait = partial(until, ceiling=CEILING_S)


def _held_manifests(agent: AgentProcess, digests: dict[str, str]) -> set[str]:
    blobs = agent.data / "store" / "blobs" / "sha256"
    return {k for k, d in digests.items() if (blobs / d.removeprefix("sha256:")).exists()}


@pytest.mark.parametrize("controller", ["sqlite", "postgresql"], indirect=True)
def test_one_deployment_spreads_over_an_amd64_and_an_arm64_node(
    tmp_path: Path, controller: RestartableController, api: AdminApi, empty_hub: RunningHub
) -> None:
    addr = empty_hub.url.removeprefix("http://")
    source = ImageStore(tmp_path / "source")
    digests = make_index(source, "multi:1", kernel=64 << 10, app=16 << 10)
    push(source, "multi:1", f"{addr}/multi:1")
    with source.lease():
        source.add_manifest(source.read_blob(digests["amd64"]), "amd64-only:1")
    push(source, "amd64-only:1", f"{addr}/amd64-only:1")

    with (
        enrolled_agent(tmp_path / "edge-x86", "edge-x86", controller, api) as x86,
        enrolled_agent(
            tmp_path / "edge-arm", "edge-arm", controller, api, "--platform", "linux/arm64"
        ) as arm,
    ):

        def ready() -> dict[str, Any] | None:
            nodes = {n["name"]: n for n in api("GET", "/v1/nodes")}
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
        deployed = api("POST", "/v1/deployments", json=spec)
        assert deployed["revision"] == 1

        def placed() -> set[str] | None:
            rows = api("GET", "/v1/replicas", params={"deployment": "multi"})
            where = {r["node_id"] for r in rows if r["node_id"]}
            return where if len(where) == 2 else None

        by_id = {n["id"]: n["name"] for n in nodes.values()}
        assert {by_id[n] for n in _wait(placed, "replicas on both nodes")} == {
            "edge-x86",
            "edge-arm",
        }
        [revision] = api("GET", "/v1/deployments/multi/revisions")
        assert revision["image_digest"].endswith(digests["index"])  # one pin: the index
        assert revision["platforms"] == ["linux/amd64", "linux/arm64/v8"]

        # Each node pulls the index and its own platform only.
        _wait(lambda: _held_manifests(x86, digests) >= {"index", "amd64"}, "the amd64 pull")
        _wait(lambda: _held_manifests(arm, digests) >= {"index", "arm64"}, "the arm64 pull")
        assert "arm64" not in _held_manifests(x86, digests)
        assert "amd64" not in _held_manifests(arm, digests)

        # A single-platform amd64 image goes to the amd64 node only.
        spec = {"name": "x86only", "image": f"{addr}/amd64-only:1", "replicas": 2}
        api("POST", "/v1/deployments", json=spec)

        def placed_single() -> list[str] | None:
            rows = api("GET", "/v1/replicas", params={"deployment": "x86only"})
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
        api("POST", "/v1/deployments", json=spec)

        def placed_arm() -> list[str] | None:
            rows = api("GET", "/v1/replicas", params={"deployment": "armonly"})
            return [r["node_id"] for r in rows if r["node_id"]] or None

        assert [by_id[n] for n in _wait(placed_arm, "the arm64 replica")] == ["edge-arm"]
        refused = api.client.post(
            "/v1/deployments",
            json={
                "name": "nope",
                "image": f"{addr}/amd64-only:1",
                "placement": {"architectures": ["linux/arm64"]},
            },
        )
        assert refused.status_code == 422 and "linux/amd64 only" in refused.text
        bad = api.client.post(
            "/v1/deployments",
            json={
                "name": "bad",
                "image": f"{addr}/multi:1",
                "placement": {"architectures": ["mips"]},
            },
        )
        assert bad.status_code == 422 and "mips" in bad.text
