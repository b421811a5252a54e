"""The leader's pass over the database: nodes gone quiet, the fleet as views, a plan applied.

The planner is pure (:mod:`ukedge.controller._planner`); this module is its boundary with the
tables. :func:`read_views` takes one consistent snapshot; :func:`apply_plan` writes the whole
plan in one transaction (replicas removed and added, rollbacks made, the ``generation`` of each
node whose set of replicas changed bumped so its next heartbeat carries the new desired state).
The snapshot and the write are separate transactions, so a plan may be a tick stale (a
deployment deleted meanwhile): the write skips what no longer applies and the next pass, made
from fresh views, corrects the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, and_, delete, select, tuple_, update

from ukedge.controller._db import deployments, nodes, replicas, revisions
from ukedge.controller._fleet import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    Resources,
)
from ukedge.controller._models import DeploymentSpec
from ukedge.controller._nodes import bump_generations, effective_labels

__all__ = ["Fleet", "PlanLike", "apply_plan", "mark_not_ready", "read_views"]


class PlanLike(Protocol):
    """What :func:`ukedge.controller._planner.plan` returns (its ``Plan``)."""

    @property
    def add(self) -> Sequence[ReplicaView]: ...
    @property
    def remove(self) -> Sequence[ReplicaView]: ...
    @property
    def rollbacks(self) -> Mapping[str, int]: ...
    @property
    def events(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Fleet:
    deployments: list[DeploymentView]
    nodes: list[NodeView]
    replicas: list[ReplicaView]


def mark_not_ready(connection: Connection, *, now: float, after_s: float) -> list[str]:
    """Nodes silent for ``after_s`` become NotReady and their replicas lost; their names."""
    # One conditional UPDATE: a heartbeat that lands meanwhile is not overwritten (it either
    # committed first, so the row no longer matches, or waits for this transaction).
    quiet = connection.execute(
        update(nodes)
        .where(nodes.c.ready.is_(True), nodes.c.last_heartbeat < now - after_s)
        .values(ready=False)
        .returning(nodes.c.id, nodes.c.name)
    ).all()
    if quiet:
        ids = [row.id for row in quiet]
        connection.execute(
            update(replicas)
            .where(
                replicas.c.node_id.in_(ids),
                replicas.c.state.not_in([s.value for s in ReplicaState if s.ended]),
            )
            .values(state=ReplicaState.LOST.value)
        )
    return [row.name for row in quiet]


def read_views(connection: Connection) -> Fleet:
    node_views = [
        NodeView(
            id=row.id,
            name=row.name,
            ready=row.ready,
            architecture=row.architecture,
            capacity=Resources(row.capacity_memory_mib, row.capacity_vcpus),
            reserved=Resources(row.reserved_memory_mib, row.reserved_vcpus),
            labels=effective_labels(row),
            cordoned=row.cordoned,
            draining=row.draining,
            cached_layers=frozenset(row.cached_layers or ()),
            last_seen=row.last_heartbeat,
        )
        for row in connection.execute(select(nodes).order_by(nodes.c.id))
    ]
    current = connection.execute(
        select(deployments, revisions.c.spec, revisions.c.layers, revisions.c.platforms)
        .add_columns(revisions.c.memory_mib, revisions.c.vcpus)
        .join(
            revisions,
            and_(
                revisions.c.deployment == deployments.c.name,
                revisions.c.revision == deployments.c.revision,
            ),
        )
        .order_by(deployments.c.name)
    ).all()
    deployment_views = []
    for row in current:
        spec = DeploymentSpec.model_validate(row.spec)
        deployment_views.append(
            DeploymentView(
                name=row.name,
                revision=row.revision,
                memory_mib=row.memory_mib,
                vcpus=row.vcpus,
                replicas=row.replicas,
                mode=spec.mode,
                architectures=frozenset(spec.placement.architectures),
                selector=spec.placement.selector,
                spread_by=spec.placement.spread_by,
                layers=row.layers or {},
                platforms=frozenset(row.platforms or ()),
                max_surge=spec.strategy.max_surge,
                max_unavailable=spec.strategy.max_unavailable,
                autonomy_s=spec.autonomy_s,
                previous_revision=row.previous_revision,
                host_ports=_host_ports(row.spec),
            )
        )
    # What a replica holds comes from its revision: read once per revision in use, not once per
    # replica (ten thousand replicas are a handful of revisions; decoding each one's spec and
    # report every pass cost the leader most of a second).
    held: dict[tuple[str, int], tuple[Resources, frozenset[str]]] = {
        (row.deployment, row.revision): (
            Resources(row.memory_mib, row.vcpus),
            _host_ports(row.spec),
        )
        for row in connection.execute(
            select(
                revisions.c.deployment,
                revisions.c.revision,
                revisions.c.memory_mib,
                revisions.c.vcpus,
                revisions.c.spec,
            ).where(
                tuple_(revisions.c.deployment, revisions.c.revision).in_(
                    select(replicas.c.deployment, replicas.c.revision).distinct()
                )
            )
        )
    }
    replica_views = []
    for row in connection.execute(_REPLICA_ROWS):
        resources, ports = held[(row.deployment, row.revision)]
        replica_views.append(
            ReplicaView(
                deployment=row.deployment,
                replica=row.replica,
                revision=row.revision,
                node_id=row.node_id,
                state=ReplicaState(row.state),
                resources=resources,
                assigned_at=row.assigned_at,
                host_ports=ports,
            )
        )
    return Fleet(deployment_views, node_views, replica_views)


#: The replica columns the planner needs (not the nodes' reports, which it never reads).
_REPLICA_ROWS = select(
    replicas.c.deployment,
    replicas.c.replica,
    replicas.c.revision,
    replicas.c.node_id,
    replicas.c.state,
    replicas.c.assigned_at,
).order_by(replicas.c.deployment, replicas.c.replica)


def _host_ports(spec: dict[str, Any]) -> frozenset[str]:
    """``tcp/8080``… for the host ports a stored spec publishes (read from its JSON: building
    the model for each of thousands of replicas would cost more than the pass)."""
    return frozenset(
        f"{port.get('protocol', 'tcp')}/{port['host_port']}" for port in spec.get("ports") or ()
    )


def apply_plan(connection: Connection, plan: PlanLike, *, now: float) -> set[str]:
    """Write ``plan``; returns the ids of the nodes whose desired state changed."""
    touched: set[str] = set()
    if plan.remove:
        keys = [(r.deployment, r.replica) for r in plan.remove]
        held = connection.execute(
            select(replicas.c.node_id).where(
                tuple_(replicas.c.deployment, replicas.c.replica).in_(keys)
            )
        ).scalars()
        touched |= {node for node in held if node}
        connection.execute(
            delete(replicas).where(tuple_(replicas.c.deployment, replicas.c.replica).in_(keys))
        )
    if plan.add:
        alive = set(
            connection.execute(
                select(deployments.c.name).where(
                    deployments.c.name.in_({r.deployment for r in plan.add})
                )
            ).scalars()
        )
        known = set(connection.execute(select(nodes.c.id)).scalars())
        rows = [
            {
                "deployment": r.deployment,
                "replica": r.replica,
                "revision": r.revision,
                "node_id": r.node_id if r.node_id in known else None,
                "state": ReplicaState.PENDING.value,
                "assigned_at": r.assigned_at or now,
                "report": None,
            }
            for r in plan.add
            if r.deployment in alive
        ]
        if rows:
            connection.execute(replicas.insert(), rows)
        touched |= {
            r.node_id
            for r in plan.add
            if r.deployment in alive and r.node_id is not None and r.node_id in known
        }
    for name, revision in plan.rollbacks.items():
        why = [e for e in plan.events if e.startswith(f"deployment {name}:")]
        message = (
            why[-1].partition(": ")[2]
            if why
            else f"the new revision's replicas failed; rolled back to revision {revision}"
        )
        connection.execute(
            update(deployments)
            .where(deployments.c.name == name)
            .values(
                revision=revision,
                previous_revision=None,
                rollout_state="rolled-back",
                rollout_message=message,
                updated_at=now,
            )
        )
    bump_generations(connection, touched)
    return touched
