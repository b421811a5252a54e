"""A mixed fleet end to end, with VMs: one deployment of a multi-platform hello-c (built here
for linux/amd64 and linux/arm64) over a real controller, a real hub and two real agents, one
of them ``--platform linux/arm64``. Each replica really boots: the amd64 one on x86_64 QEMU,
the arm64 one on ``qemu-system-aarch64 -M virt`` under TCG, and each one's result line reaches
the controller from its own node."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from kit.hub import RunningHub
from kit.link_controller import AdminApi, RestartableController, enrolled_agent
from kit.poll import until
from ukedge.build import build_index
from ukedge.image import ImageStore, parse_platforms
from ukedge.registry import push

pytestmark = [pytest.mark.vm, pytest.mark.foreign_arch]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Two boots under TCG (one of them a foreign architecture) on a shared machine.
CEILING_S = 600.0
_wait = partial(until, ceiling=CEILING_S, every=0.5)


def test_replicas_of_one_deployment_run_on_x86_64_and_on_emulated_arm64(
    tmp_path: Path, controller: RestartableController, api: AdminApi, empty_hub: RunningHub
) -> None:
    addr = empty_hub.url.removeprefix("http://")
    source = ImageStore(tmp_path / "source")
    built = build_index(
        EXAMPLES / "hello-c",
        ["hello-c:multi"],
        store=source,
        platforms=parse_platforms("linux/amd64,linux/arm64"),
    )
    push(source, "hello-c:multi", f"{addr}/hello-c:multi")
    manifests = {str(b.config.platform.architecture): b.digest for b in built.builds}

    with (
        enrolled_agent(tmp_path / "edge-x86", "edge-x86", controller, api) as x86,
        enrolled_agent(
            tmp_path / "edge-arm", "edge-arm", controller, api, "--platform", "linux/arm64"
        ) as arm,
    ):
        _wait(lambda: len(api("GET", "/v1/nodes")) == 2, "both nodes enrolled")
        spec = {
            "name": "hello",
            "image": f"{addr}/hello-c:multi",
            "replicas": 2,
            "restart": {"name": "no"},
        }
        api("POST", "/v1/deployments", json=spec)

        def results_from_both() -> dict[str, Any] | None:
            rows = api("GET", "/v1/results", params={"deployment": "hello"})
            by_node = {r["node_name"]: r for r in rows}
            return by_node if set(by_node) == {"edge-x86", "edge-arm"} else None

        by_node = _wait(results_from_both, "a result from each node's replica")
        for record in by_node.values():
            assert record["error"] is None and record["result"], record

        # Each node booted its own platform's manifest of the one pinned index.
        for node, arch in ((x86, "amd64"), (arm, "arm64")):
            client = node.client()

            def exited(client: Any = client) -> Any:
                # The result reaches the centre before the VM's exit is recorded. A replica
                # that ended (restart "no") is replaced, so the node may hold none for a moment,
                # or an ended one beside its successor.
                ended = [
                    i
                    for i in client.list(all_instances=True)
                    if i.labels.get("ukedge.deployment") == "hello" and i.exit_code is not None
                ]
                return ended[0] if ended else None

            instance = _wait(exited, f"the {arch} replica's exit")
            assert instance.image_digest == manifests[arch]
            assert instance.exit_code == 0
        assert "emulated" in arm.log.read_text()
