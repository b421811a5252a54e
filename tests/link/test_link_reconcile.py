"""The pure reconcile decision: create the missing, keep what matches (whatever its state),
replace another revision, remove what is no longer desired, never touch unlabelled instances."""

from __future__ import annotations

import itertools

import pytest

from ukedge.host import Instance, InstanceState, RunRequest
from ukedge.host.link import (
    DEPLOYMENT_LABEL,
    REPLICA_LABEL,
    REVISION_LABEL,
    DesiredInstance,
    Marks,
    marks_of,
    plan_reconcile,
    request_for,
)

_ids = itertools.count(1)


def desired(
    deployment: str, replica: str, revision: int, name: str | None = None
) -> DesiredInstance:
    return DesiredInstance(
        name=name or f"{deployment}-{replica}",
        deployment=deployment,
        replica=replica,
        revision=revision,
        request=RunRequest(image="hub.local:5000/app@sha256:" + "a" * 64, memory_mib=64),
    )


def instance(
    name: str,
    labels: dict[str, str] | None = None,
    state: InstanceState = InstanceState.RUNNING,
) -> Instance:
    n = next(_ids)
    return Instance(
        id=f"{n:032x}",
        name=name,
        image="app:1",
        image_digest="sha256:" + "0" * 64,
        state=state,
        created_at=float(n),
        memory_mib=64,
        vcpus=1,
        workdir=f"/tmp/{n}",
        labels=labels or {},
    )


def marked(
    name: str, deployment: str, replica: str, revision: int, **kwargs: InstanceState
) -> Instance:
    labels = {
        DEPLOYMENT_LABEL: deployment,
        REPLICA_LABEL: replica,
        REVISION_LABEL: str(revision),
    }
    return instance(name, labels, **kwargs)


def test_creates_what_is_missing() -> None:
    want = [desired("web", "r1", 1), desired("web", "r2", 1)]
    plan = plan_reconcile(want, [])
    assert plan.create == want
    assert not (plan.replace or plan.remove or plan.keep)


@pytest.mark.parametrize("state", list(InstanceState))
def test_keeps_a_matching_instance_whatever_its_state(state: InstanceState) -> None:
    """The controller coming back never restarts a running instance; an ended one is the
    restart policy's business."""
    have = marked("web-r1", "web", "r1", 3, state=state)
    plan = plan_reconcile([desired("web", "r1", 3)], [have])
    assert plan.keep == [have]
    assert plan.idle


def test_replaces_another_revision() -> None:
    old = marked("web-r1", "web", "r1", 1)
    new = desired("web", "r1", 2)
    plan = plan_reconcile([new], [old])
    assert plan.replace == [(old, new)]
    assert not (plan.create or plan.remove or plan.keep)


def test_removes_what_is_no_longer_desired() -> None:
    gone = marked("web-r2", "web", "r2", 1)
    other = marked("db-r1", "db", "r1", 1)
    keep = marked("web-r1", "web", "r1", 1)
    plan = plan_reconcile([desired("web", "r1", 1)], [gone, keep, other])
    assert plan.remove == [gone, other]
    assert plan.keep == [keep]


def test_never_touches_unlabelled_instances() -> None:
    by_hand = instance("web-r1")  # even with the name the controller wants
    tools = instance("other", {"com.example.tool": "x"})
    plan = plan_reconcile([desired("web", "r1", 1)], [by_hand, tools])
    assert plan.create == [desired("web", "r1", 1)]
    assert not (plan.remove or plan.replace or plan.keep)
    assert plan_reconcile([], [by_hand, tools]).idle


def test_an_empty_desired_state_removes_every_controller_instance() -> None:
    mine = [marked("a", "web", "r1", 1), marked("b", "web", "r2", 4)]
    plan = plan_reconcile([], [*mine, instance("c")])
    assert plan.remove == mine


def test_duplicates_of_one_replica_keep_the_current_revision() -> None:
    """After a crash between create and remove a replica may have two instances."""
    old = marked("web-r1-old", "web", "r1", 1)
    current = marked("web-r1", "web", "r1", 2)
    plan = plan_reconcile([desired("web", "r1", 2)], [old, current])
    assert plan.keep == [current]
    assert plan.remove == [old]
    twin = marked("web-r1-twin", "web", "r1", 2)
    plan = plan_reconcile([desired("web", "r1", 2)], [current, twin])
    assert plan.keep == [current]
    assert plan.remove == [twin]


def test_an_instance_without_a_replica_label_is_removed() -> None:
    broken = instance("x", {DEPLOYMENT_LABEL: "web"})
    plan = plan_reconcile([desired("web", "r1", 1)], [broken])
    assert plan.remove == [broken]
    assert plan.create == [desired("web", "r1", 1)]


def test_a_garbled_revision_is_replaced() -> None:
    garbled = instance(
        "web-r1", {DEPLOYMENT_LABEL: "web", REPLICA_LABEL: "r1", REVISION_LABEL: "x"}
    )
    assert marks_of(garbled.labels) == Marks("web", "r1", None)
    plan = plan_reconcile([desired("web", "r1", 1)], [garbled])
    assert plan.replace == [(garbled, desired("web", "r1", 1))]


def test_the_same_input_gives_the_same_plan() -> None:
    want = [desired("web", f"r{i}", 2) for i in range(5)]
    have = [marked(f"web-r{i}", "web", f"r{i}", 1 + i % 2) for i in range(0, 8, 2)]
    assert plan_reconcile(want, have) == plan_reconcile(want, have)


def test_request_for_sets_the_name_and_the_controllers_labels() -> None:
    item = desired("web", "r1", 7, name="web-0")
    item = item.model_copy(
        update={
            "request": item.request.model_copy(
                update={
                    "labels": {"tier": "front", DEPLOYMENT_LABEL: "spoofed"},
                    "auto_remove": True,
                }
            )
        }
    )
    request = request_for(item)
    assert request.name == "web-0"
    assert request.labels == {
        "tier": "front",
        DEPLOYMENT_LABEL: "web",
        REPLICA_LABEL: "r1",
        REVISION_LABEL: "7",
    }
    assert request.image == item.request.image
    assert not request.auto_remove
    assert marks_of(request.labels) == Marks("web", "r1", 7)


def test_held_replicas_are_neither_created_replaced_nor_removed() -> None:
    """A move's hold: the source's desired state lists a replica its move took away, the
    target has one its desired state does not list yet; both stay as they are."""
    gone = desired("web", "r1", 1)  # moved away: listed, no instance
    arrived = marked("web-r2", "web", "r2", 1)  # moved in: not listed
    other = marked("web-r3", "web", "r3", 1)  # not held: another revision is wanted
    want = [gone, desired("web", "r3", 2)]
    plan = plan_reconcile(want, [arrived, other], held={("web", "r1"), ("web", "r2")})
    assert plan.create == []
    assert plan.remove == []
    assert [(i.name, d.revision) for i, d in plan.replace] == [("web-r3", 2)]
    unheld = plan_reconcile(want, [arrived, other])
    assert [d.name for d in unheld.create] == ["web-r1"]
    assert unheld.remove == [arrived]
