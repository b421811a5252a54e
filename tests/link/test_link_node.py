"""The link against a real node (manager, image store, cache), without booting a VM: the
heartbeat body, and reconcile passes that only remove instances or fail to create them."""

from __future__ import annotations

import platform

from ukedge.host import InstanceState, LocalNode, PortMapping, RunRequest
from ukedge.host.link import (
    DEPLOYMENT_LABEL,
    REPLICA_LABEL,
    REVISION_LABEL,
    Applier,
    DesiredInstance,
    DesiredState,
    build_heartbeat,
)


def _marks(deployment: str, replica: str, revision: int) -> dict[str, str]:
    return {DEPLOYMENT_LABEL: deployment, REPLICA_LABEL: replica, REVISION_LABEL: str(revision)}


def test_heartbeat_of_an_empty_node(node: LocalNode) -> None:
    beat = build_heartbeat(node, accelerator="tcg", applied_generation=0)
    assert beat.name == "edge-1"
    assert beat.labels == {"zone": "a"}
    assert beat.architecture == platform.machine()
    assert beat.accelerator == "tcg"
    # Capacity as admission counts it: allocatable × over-commit (2048 MiB, 4 vCPUs, × 1.5).
    assert (beat.capacity.memory_mib, beat.capacity.vcpus) == (3072, 6)
    assert (beat.allocated.memory_mib, beat.allocated.vcpus) == (0, 0)
    assert beat.instances == []
    assert beat.applied_generation == 0
    # The examples' store holds hello-c and sensor-agg: their layers are cached here.
    _image, manifest = node.cache.store.manifest("hello-c:1")
    assert {layer.digest for layer in manifest.layers} <= set(beat.cached_layers)
    assert beat.cached_layers == sorted(beat.cached_layers)


def test_heartbeat_reports_instances_with_their_marks(node: LocalNode) -> None:
    node.manager.create(RunRequest(image="hello-c:1", name="web-r1", labels=_marks("web", "r1", 4)))
    node.manager.create(RunRequest(image="hello-c:1", name="by-hand"))
    beat = build_heartbeat(node, accelerator="tcg", applied_generation=4)
    reports = {r.name: r for r in beat.instances}
    assert set(reports) == {"web-r1", "by-hand"}
    web = reports["web-r1"]
    assert (web.deployment, web.replica, web.revision) == ("web", "r1", 4)
    assert web.state is InstanceState.CREATED
    assert reports["by-hand"].deployment is None
    assert beat.applied_generation == 4
    # A created instance holds nothing yet (admission counts active ones).
    assert beat.allocated.memory_mib == 0


def test_a_node_that_takes_part_in_moves_reports_ports_and_only_then(node: LocalNode) -> None:
    """Ports and the move fields go only to a controller that knows them: one that a node with
    a migration host talks to (a first-release controller refuses unknown fields)."""
    port = PortMapping(host_port=40999, guest_port=8080)
    node.manager.create(RunRequest(image="hello-c:1", name="web-r1", ports=[port]))
    plain = build_heartbeat(node, accelerator="tcg", applied_generation=0)
    assert plain.instances[0].ports == []
    assert "ports" not in plain.model_dump(mode="json")["instances"][0]
    assert "migration_host" not in plain.model_dump(mode="json")
    moving = build_heartbeat(
        node, accelerator="tcg", applied_generation=0, migration_host="10.0.0.1"
    )
    assert moving.instances[0].ports == [port]
    assert moving.model_dump(mode="json")["migration_host"] == "10.0.0.1"


def test_a_pass_removes_what_is_no_longer_desired_and_leaves_the_rest(node: LocalNode) -> None:
    node.manager.create(RunRequest(image="hello-c:1", name="web-r1", labels=_marks("web", "r1", 1)))
    node.manager.create(RunRequest(image="hello-c:1", name="web-r2", labels=_marks("web", "r2", 1)))
    node.manager.create(RunRequest(image="hello-c:1", name="by-hand", labels={"tier": "x"}))
    keep = DesiredInstance(
        name="web-r1",
        deployment="web",
        replica="r1",
        revision=1,
        request=RunRequest(image="hello-c:1"),
    )
    result = Applier(node).apply(DesiredState(generation=2, instances=[keep]))
    assert result.removed == ["web-r2"]
    assert (result.created, result.replaced, result.errors) == ([], [], {})
    names = {i.name: i.state for i in node.list(all_instances=True)}
    # web-r1 matches (same replica and revision) and stays as it is: created, not started.
    assert names == {"web-r1": InstanceState.CREATED, "by-hand": InstanceState.CREATED}


def test_a_failed_creation_is_reported_and_the_pass_goes_on(node: LocalNode) -> None:
    node.manager.create(RunRequest(image="hello-c:1", name="old-r1", labels=_marks("old", "r1", 1)))
    missing = DesiredInstance(
        name="web-r1",
        deployment="web",
        replica="r1",
        revision=3,
        request=RunRequest(image="no-such-image:1"),
    )
    taken = DesiredInstance(  # a hand-made instance holds this name
        name="by-hand",
        deployment="web",
        replica="r2",
        revision=3,
        request=RunRequest(image="hello-c:1"),
    )
    node.manager.create(RunRequest(image="hello-c:1", name="by-hand"))
    applier = Applier(node)
    result = applier.apply(DesiredState(generation=3, instances=[missing, taken]))
    assert result.removed == ["old-r1"]
    assert set(result.errors) == {"web-r1", "by-hand"}
    assert "no-such-image" in result.errors["web-r1"][1]
    assert "already in use" in result.errors["by-hand"][1]
    assert {i.name for i in node.list(all_instances=True)} == {"by-hand"}  # untouched

    beat = build_heartbeat(node, accelerator="tcg", applied_generation=3, errors=result.errors)
    reports = {(r.name, r.deployment): r for r in beat.instances}
    assert set(reports) == {("web-r1", "web"), ("by-hand", "web"), ("by-hand", None)}
    failed = reports["web-r1", "web"]
    assert (failed.replica, failed.revision) == ("r1", 3)
    assert failed.state is InstanceState.FAILED
    assert failed.error is not None and "no-such-image" in failed.error
    # The replica that wanted a taken name is reported failed; the hand-made namesake is
    # reported as itself, without the replica's error.
    assert reports["by-hand", "web"].state is InstanceState.FAILED
    assert "already in use" in (reports["by-hand", "web"].error or "")
    assert reports["by-hand", None].error is None


def test_a_failed_creation_waits_for_its_back_off(node: LocalNode) -> None:
    """No pull every pass over a slow link: a failure is tried again after a doubling pause,
    at once when the desired instance changes."""
    now = [100.0]
    applier = Applier(node, clock=lambda: now[0])
    broken = DesiredInstance(
        name="web-r1",
        deployment="web",
        replica="r1",
        revision=1,
        request=RunRequest(image="no-such-image:1"),
    )
    state = DesiredState(generation=1, instances=[broken])
    first = applier.apply(state)
    assert "web-r1" in first.errors and first.deferred == []
    again = applier.apply(state)
    assert again.deferred == ["web-r1"]
    assert again.errors["web-r1"] == first.errors["web-r1"]  # still reported
    now[0] += 2.0  # RETRY_MIN_S
    assert applier.apply(state).deferred == []  # tried (and failed) again: next pause 4 s
    now[0] += 3.0
    assert applier.apply(state).deferred == ["web-r1"]
    other = broken.model_copy(
        update={"revision": 2, "request": RunRequest(image="no-such-image:2")}
    )
    changed = applier.apply(DesiredState(generation=2, instances=[other]))
    assert changed.deferred == []  # a changed instance is tried at once
    assert "no-such-image:2" in changed.errors["web-r1"][1]
