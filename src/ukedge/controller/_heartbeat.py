"""A node's heartbeat: what it reports is recorded, and the answer carries its desired state.

One transaction per heartbeat: the node's row (capacity, allocation, cached layers, readiness,
the generation it applied) and its replicas' states, matched to the instances it reports by
the ``deployment``/``replica`` labels and the revision (an instance still at the old revision
of a replica being updated does not count as the new one running). The reply carries the whole
desired state when the node has not applied the current generation, and nothing otherwise, so
steady-state heartbeats stay small.

The desired state is each replica assigned to the node at *its own* revision (a rolling update
moves replica by replica), with images pinned by digest; ``prepull`` names the current
revision's image of each deployment the node runs older replicas of, so the node fetches it
before the rollout reaches it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, select, update

from ukedge.controller._db import Database, deployments, nodes, replicas, revisions
from ukedge.controller._fleet import ReplicaState
from ukedge.controller._models import DeploymentSpec
from ukedge.controller._movestore import relay
from ukedge.controller._nodes import authenticate_node
from ukedge.host import HealthStatus, InstanceState, RestartPolicy, RunRequest
from ukedge.host.link import (
    DesiredInstance,
    DesiredState,
    Heartbeat,
    HeartbeatReply,
    InstanceReport,
)

__all__ = [
    "CRASH_LOOP",
    "desired_state",
    "instance_name",
    "record",
    "record_heartbeat",
    "replica_state",
    "touch",
]


def instance_name(deployment: str, replica: str) -> str:
    return f"{deployment}-{replica}"


#: Restarts after which an instance that ended again counts as failed, whatever its policy.
CRASH_LOOP = 3


def replica_state(report: InstanceReport, restart: RestartPolicy) -> ReplicaState:
    """What a replica's instance, as its node reports it, means to the planner.

    An ended instance its node will start again (by ``restart``, the deployment's policy, which
    the node applies) is only between runs: FAILED, which makes the planner replace it
    elsewhere (or roll a new revision back), is kept for an instance the node has given up on,
    or that keeps crashing (ended again after :data:`CRASH_LOOP` restarts). One that ended
    with status 0 and that its policy does not restart has done its work: COMPLETED (replacing
    it would run a finished job again and again, each time under a new replica id).
    """
    if report.state in (InstanceState.EXITED, InstanceState.FAILED):
        failed = report.state == InstanceState.FAILED or report.exit_code != 0
        retries_left = restart.max_retries is None or report.restart_count < restart.max_retries
        retries_left = retries_left and report.restart_count < CRASH_LOOP
        restarts = restart.name == "always" or (restart.name == "on-failure" and failed)
        if restarts and retries_left:
            return ReplicaState.STARTING
        if not restarts and not failed:
            return ReplicaState.COMPLETED
        return ReplicaState.FAILED
    if report.state != InstanceState.RUNNING:
        return ReplicaState.STARTING
    if report.health == HealthStatus.UNHEALTHY:
        return ReplicaState.UNHEALTHY
    if report.health == HealthStatus.STARTING:
        return ReplicaState.STARTING
    return ReplicaState.RUNNING


#: Built once: every heartbeat runs it, and building a statement costs more than running it.
_NODE_REPLICAS = (
    select(
        replicas,
        revisions.c.spec,
        revisions.c.image_digest,
        revisions.c.memory_mib,
        revisions.c.vcpus,
    )
    .join(
        revisions,
        and_(
            revisions.c.deployment == replicas.c.deployment,
            revisions.c.revision == replicas.c.revision,
        ),
    )
    .where(replicas.c.node_id == bindparam("node_id"))
    .order_by(replicas.c.deployment, replicas.c.replica)
)


#: The node's own row, written by every heartbeat: built once with its values as parameters (a
#: statement built per call with ``.values(...)`` spent about a millisecond on its cache key).
_NODE_REPORT = update(nodes).where(nodes.c.id == bindparam("node_key"))


def _node_replicas(connection: Connection, node_id: str) -> list[Row[Any]]:
    return list(connection.execute(_NODE_REPLICAS, {"node_id": node_id}).all())


def desired_state(
    connection: Connection, node_id: str, generation: int, rows: list[Row[Any]] | None = None
) -> DesiredState:
    """The node's desired state; ``rows``: its replicas as read in this transaction, if so."""
    if rows is None:
        rows = _node_replicas(connection, node_id)
    instances = []
    for row in rows:
        spec = DeploymentSpec.model_validate(row.spec)
        name = instance_name(row.deployment, row.replica)
        request = RunRequest(
            image=row.image_digest,
            name=name,
            args=spec.args,
            env=spec.env,
            ports=spec.ports,
            memory_mib=row.memory_mib,
            vcpus=row.vcpus,
            restart=spec.restart,
            on_demand=spec.on_demand,
        )
        instances.append(
            DesiredInstance(
                name=name,
                deployment=row.deployment,
                replica=row.replica,
                revision=row.revision,
                request=request,
            )
        )
    prepull: list[str] = []
    names = sorted({row.deployment for row in rows})
    if names:
        current = connection.execute(
            select(deployments.c.name, deployments.c.revision, revisions.c.image_digest)
            .join(
                revisions,
                and_(
                    revisions.c.deployment == deployments.c.name,
                    revisions.c.revision == deployments.c.revision,
                ),
            )
            .where(deployments.c.name.in_(names))
        ).all()
        ours = {(row.deployment, row.image_digest) for row in rows}
        for deployment, revision, image in current:
            behind = any(r.deployment == deployment and r.revision != revision for r in rows)
            if behind and (deployment, image) not in ours and image not in prepull:
                prepull.append(image)
    return DesiredState(generation=generation, instances=instances, prepull=prepull)


#: A replica's state and report, written when a heartbeat changes them (built once, as above).
_REPLICA_REPORT = update(replicas).where(
    replicas.c.deployment == bindparam("deployment_key"),
    replicas.c.replica == bindparam("replica_key"),
)

#: The cheap heartbeat: only the node's last-seen time moves, and only while nothing the full
#: heartbeat recorded can have changed since (see :func:`touch`).
_TOUCH = (
    update(nodes)
    .where(
        nodes.c.id == bindparam("node_key"),
        nodes.c.last_heartbeat == bindparam("previous"),
        nodes.c.ready.is_(True),
        nodes.c.generation == bindparam("settled"),
        nodes.c.applied_generation == bindparam("settled"),
    )
    .values(last_heartbeat=bindparam("now"))
)


def touch(
    connection: Connection, node_id: str, *, previous: float, generation: int, now: float
) -> bool:
    """Record only that the node was seen at ``now``, when a heartbeat repeats the one recorded
    in full at ``previous`` (the same content, hashed by the caller) whose node had applied
    ``generation``; False (nothing written) when that no longer holds.

    Everything else the full heartbeat would write is then already there: whoever changes a
    node's row or its replicas either writes ``last_heartbeat`` (another heartbeat, in this or
    another controller process), clears ``ready`` (the leader, marking it NotReady and its
    replicas lost), bumps ``generation`` (a plan or a deployment change that adds or removes
    the node's replicas) or deletes the node; each makes this conditional UPDATE match nothing,
    and the caller records the heartbeat in full instead.
    """
    parameters = {
        "node_key": node_id,
        "previous": previous,
        "settled": generation,
        "now": now,
    }
    return bool(connection.execute(_TOUCH, parameters).rowcount == 1)


def record(
    connection: Connection,
    node_id: str,
    credential: str,
    beat: Heartbeat,
    *,
    now: float,
    interval: float,
) -> tuple[HeartbeatReply, int | None]:
    """Record ``beat`` in full in ``connection``'s transaction: the reply and the node's
    generation (the node has applied its desired state when that equals its
    ``applied_generation``), or None while a move of the node's is in flight (its next
    heartbeat must be recorded in full too)."""
    node = authenticate_node(connection, node_id, credential)
    moves = relay(connection, node_id, beat, now=now)
    generation = int(node.generation)
    if moves.recorded:  # a replica changed node: this node's generation was bumped
        generation = int(
            connection.execute(select(nodes.c.generation).where(nodes.c.id == node_id)).scalar_one()
        )
    assigned = _node_replicas(connection, node_id)
    rows = {(r.deployment, r.replica): r for r in assigned}
    owned_memory = owned_vcpus = 0
    changed: list[dict[str, Any]] = []
    for report in beat.instances:
        row = rows.pop((report.deployment or "", report.replica or ""), None)
        if row is None:
            continue  # not the controller's, or a replica since moved away
        if report.state.active:
            owned_memory += row.memory_mib
            owned_vcpus += row.vcpus
        if report.revision != row.revision:
            continue  # the old revision of this replica: not yet updated
        restart = RestartPolicy.model_validate(row.spec.get("restart") or {})
        state = replica_state(report, restart)
        document = report.model_dump(mode="json")
        if row.state != state or row.report != document:
            changed.append(
                {
                    "deployment_key": row.deployment,
                    "replica_key": row.replica,
                    "state": state.value,
                    "report": document,
                }
            )
    if changed:
        connection.execute(_REPLICA_REPORT, changed)
    pending = ReplicaState.PENDING.value
    found = [  # assigned but not reported: no longer lost, the node is back
        {"deployment_key": r.deployment, "replica_key": r.replica, "state": pending}
        for r in rows.values()
        if r.state == ReplicaState.LOST
    ]
    if found:
        connection.execute(_REPLICA_REPORT, found)
    connection.execute(
        _NODE_REPORT,
        {
            "node_key": node_id,
            "labels": beat.labels,
            "architecture": beat.architecture,
            "accelerator": beat.accelerator,
            "accelerators": beat.accelerators or None,
            "capacity_memory_mib": beat.capacity.memory_mib,
            "capacity_vcpus": beat.capacity.vcpus,
            "allocated_memory_mib": beat.allocated.memory_mib,
            "allocated_vcpus": beat.allocated.vcpus,
            "reserved_memory_mib": max(0, beat.allocated.memory_mib - owned_memory),
            "reserved_vcpus": max(0, beat.allocated.vcpus - owned_vcpus),
            "cached_layers": sorted(set(beat.cached_layers)),
            "instances": len(beat.instances),
            "last_heartbeat": now,
            "ready": True,
            "applied_generation": beat.applied_generation,
            "migration_host": beat.migration_host,
        },
    )
    desired = None
    if generation != beat.applied_generation:
        # Its replicas as read above: this transaction changed their states and reports,
        # which the desired state does not carry, not which replicas the node has.
        desired = desired_state(connection, node_id, generation, assigned)
    reply = HeartbeatReply(
        desired=desired,
        heartbeat_interval_s=interval,
        offer_requests=moves.offer_requests,
        moves=moves.orders,
        cancels=moves.cancels,
    )
    return reply, None if moves.in_flight else generation


def record_heartbeat(
    db: Database,
    node_id: str,
    credential: str,
    beat: Heartbeat,
    *,
    now: float,
    interval: float,
) -> HeartbeatReply:
    """One heartbeat recorded in full in a transaction of its own."""
    with db.write() as connection:
        return record(connection, node_id, credential, beat, now=now, interval=interval)[0]
