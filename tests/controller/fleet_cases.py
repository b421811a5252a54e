"""Fleets for the scheduler's and planner's tests: short builders and hypothesis strategies."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from ukedge.controller import (
    DeploymentView,
    NodeView,
    Plan,
    ReplicaState,
    ReplicaView,
    Resources,
)
from ukedge.controller._scheduler import holds_resources

RUNNING = ReplicaState.RUNNING
PENDING = ReplicaState.PENDING


def node(
    node_id: str,
    *,
    memory_mib: int = 4096,
    vcpus: int = 4,
    zone: str | None = None,
    labels: Mapping[str, str] | None = None,
    architecture: str = "x86_64",
    cached: Iterable[str] = (),
    **fields: Any,
) -> NodeView:
    all_labels = dict(labels or {})
    if zone is not None:
        all_labels["zone"] = zone
    fields.setdefault("ready", True)
    fields.setdefault("last_seen", 100.0)
    return NodeView(
        id=node_id,
        name=node_id,
        architecture=architecture,
        capacity=Resources(memory_mib, vcpus),
        labels=all_labels,
        cached_layers=frozenset(cached),
        **fields,
    )


def deployment(name: str = "web", **fields: Any) -> DeploymentView:
    fields.setdefault("revision", 1)
    fields.setdefault("memory_mib", 256)
    fields.setdefault("vcpus", 1)
    return DeploymentView(name=name, **fields)


def replica(
    of: DeploymentView,
    replica_id: str,
    node_id: str | None,
    state: ReplicaState = RUNNING,
    *,
    revision: int | None = None,
    assigned_at: float = 0.0,
) -> ReplicaView:
    return ReplicaView(
        deployment=of.name,
        replica=replica_id,
        revision=of.revision if revision is None else revision,
        node_id=node_id,
        state=state,
        resources=of.resources,
        assigned_at=assigned_at,
        host_ports=of.host_ports,
    )


def ids(prefix: str = "new") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def apply(replicas: Sequence[ReplicaView], plan: Plan) -> list[ReplicaView]:
    """The replicas once the store applied ``plan`` (added ones are PENDING)."""
    gone = {(r.deployment, r.replica) for r in plan.remove}
    return [r for r in replicas if (r.deployment, r.replica) not in gone] + list(plan.add)


def start_all(replicas: Sequence[ReplicaView]) -> list[ReplicaView]:
    """Every pending replica reported running (its node started it)."""
    return [dataclasses.replace(r, state=RUNNING) if r.state is PENDING else r for r in replicas]


def used_on(node_id: str, replicas: Iterable[ReplicaView]) -> Resources:
    total = Resources()
    for r in replicas:
        if r.node_id == node_id and holds_resources(r):
            total += r.resources
    return total


# --- hypothesis strategies -------------------------------------------------------------------

ZONES = ("a", "b", "c")
ARCHES = ("x86_64", "aarch64")


@st.composite
def nodes(draw: st.DrawFn, *, min_size: int = 1, max_size: int = 12) -> list[NodeView]:
    count = draw(st.integers(min_size, max_size))
    out = []
    for index in range(count):
        out.append(
            node(
                f"n{index:02d}",
                memory_mib=draw(st.sampled_from([0, 256, 512, 1024, 2048])),
                vcpus=draw(st.integers(0, 4)),
                zone=draw(st.sampled_from((*ZONES, None))),
                labels={"gpu": "yes"} if draw(st.booleans()) else {},
                architecture=draw(st.sampled_from(ARCHES)),
                cached=draw(st.sets(st.sampled_from(["l1", "l2"]))),
                ready=draw(st.booleans()) or draw(st.booleans()),
                cordoned=draw(st.integers(0, 5)) == 0,
                draining=draw(st.integers(0, 5)) == 0,
                reserved=Resources(draw(st.sampled_from([0, 128])), 0),
                last_seen=draw(st.sampled_from([None, 0.0, 90.0, 100.0])),
            )
        )
    return out


@st.composite
def deployments(draw: st.DrawFn, name: str = "web", **fixed: Any) -> DeploymentView:
    fields: dict[str, Any] = {
        "revision": draw(st.integers(1, 3)),
        "memory_mib": draw(st.sampled_from([64, 128, 256, 512])),
        "vcpus": draw(st.integers(0, 2)),
        "replicas": draw(st.integers(0, 8)),
        "mode": draw(st.sampled_from(["replicated", "replicated", "per-node"])),
        "architectures": draw(st.sets(st.sampled_from(ARCHES), max_size=1)),
        "platforms": draw(st.sets(st.sampled_from(["linux/amd64", "linux/arm64/v8"]), max_size=2)),
        "selector": {"gpu": "yes"} if draw(st.integers(0, 3)) == 0 else {},
        "spread_by": draw(st.sampled_from(["zone", None])),
        "layers": {"l1": 1000, "l2": 10} if draw(st.booleans()) else {},
        "max_surge": draw(st.integers(0, 2)),
        "autonomy_s": draw(st.sampled_from([0.0, 50.0])),
    }
    fields["max_unavailable"] = draw(st.integers(0 if fields["max_surge"] else 1, 2))
    if fields["revision"] > 1 and draw(st.booleans()):
        fields["previous_revision"] = fields["revision"] - 1
    fields.update(fixed)
    return deployment(name, **fields)


@st.composite
def replicas_of(
    draw: st.DrawFn, of: DeploymentView, on: Sequence[NodeView], max_size: int = 8
) -> list[ReplicaView]:
    node_ids: list[str | None] = [n.id for n in on] + ["gone"]
    count = draw(st.integers(0, max_size))
    return [
        replica(
            of,
            f"{of.name}-{index}",
            draw(st.sampled_from(node_ids)),
            draw(st.sampled_from(list(ReplicaState))),
            revision=draw(st.integers(1, of.revision)),
            assigned_at=draw(st.sampled_from([0.0, 50.0, 99.0])),
        )
        for index in range(count)
    ]
