"""Deployments and their revisions: declared by the operator, rolled out by the leader.

``POST /v1/deployments`` is declarative: a new name makes revision 1; a known name whose spec
(or pinned image: the tag may have moved) differs from the current revision's makes the next
revision, which the planner rolls out replica by replica; a spec that differs only in its
replica count scales without a new revision (as Kubernetes does). The image is pinned before
the transaction opens (a registry round trip must not hold the database's write lock); each
change is then one transaction. Replicas are the planner's: this module only reads them,
except that deleting a deployment deletes its replicas and tells their nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, delete, func, select, update

from ukedge.controller._db import Database, deployments, nodes, replicas, revisions
from ukedge.controller._fleet import ReplicaState
from ukedge.controller._models import (
    Deployment,
    DeploymentSpec,
    ReplicaRecord,
    Revision,
    RolloutStatus,
)
from ukedge.controller._nodes import bump_generations, find_node
from ukedge.controller._pinning import PinnedImage
from ukedge.errors import ControllerError

__all__ = [
    "apply_spec",
    "delete_deployment",
    "get_deployment",
    "list_deployments",
    "list_replicas",
    "list_revisions",
    "rollback",
    "scale",
]


def _find(connection: Connection, name: str) -> Row[Any]:
    row = connection.execute(select(deployments).where(deployments.c.name == name)).first()
    if row is None:
        raise ControllerError(f"no deployment {name!r} (see `ukedge deployments ls`)", status=404)
    return row


def _revision(connection: Connection, name: str, revision: int) -> Row[Any] | None:
    return connection.execute(
        select(revisions).where(revisions.c.deployment == name, revisions.c.revision == revision)
    ).first()


def _tell_nodes(connection: Connection, name: str) -> None:
    """The nodes running the deployment's replicas get a new desired state at their next
    heartbeat (a new current revision: its image in ``prepull``, before the rollout reaches
    them; a deletion: without the replicas)."""
    held = connection.execute(
        select(replicas.c.node_id).where(
            replicas.c.deployment == name, replicas.c.node_id.is_not(None)
        )
    ).scalars()
    bump_generations(connection, set(held))


def _same(spec: DeploymentSpec, pinned: PinnedImage, current: Row[Any]) -> bool:
    ours = spec.model_dump(mode="json", exclude={"replicas"})
    theirs = {k: v for k, v in current.spec.items() if k != "replicas"}
    return bool(ours == theirs and pinned.reference == current.image_digest)


def _status(row: Row[Any], spec: DeploymentSpec, rows: Sequence[Row[Any]]) -> RolloutStatus:
    # A completed replica (a job that ended with status 0) counts as ready: it did its work.
    available = [r for r in rows if ReplicaState(r.state).available]
    desired = len(rows) if spec.mode == "per-node" else row.replicas
    updated = sum(1 for r in rows if r.revision == row.revision)
    ready = sum(1 for r in available if r.revision == row.revision)
    state = row.rollout_state
    if state not in ("rolled-back", "failed"):
        done = updated == desired == ready and len(rows) == desired
        state = "complete" if done else "progressing"
    return RolloutStatus(
        state=state,
        revision=row.revision,
        desired=desired,
        updated=updated,
        ready=ready,
        unavailable=max(0, desired - len(available)),
        message=row.rollout_message,
    )


def _record(connection: Connection, row: Row[Any]) -> Deployment:
    current = _revision(connection, row.name, row.revision)
    assert current is not None, "a deployment's current revision is always stored"
    spec = DeploymentSpec.model_validate({**current.spec, "replicas": row.replicas})
    rows = connection.execute(select(replicas).where(replicas.c.deployment == row.name)).all()
    return Deployment(
        name=row.name,
        spec=spec,
        revision=row.revision,
        rollout=_status(row, spec, rows),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def apply_spec(
    db: Database, spec: DeploymentSpec, pinned: PinnedImage, *, now: float
) -> Deployment:
    """Create the deployment, scale it, or make its next revision (see the module's text)."""
    values = {
        "spec": spec.model_dump(mode="json"),
        "image_digest": pinned.reference,
        "layers": pinned.layers,
        "platforms": list(pinned.platforms),
        "memory_mib": spec.memory_mib or pinned.memory_mib,
        "vcpus": spec.vcpus or pinned.vcpus,
        "created_at": now,
    }
    with db.write() as connection:
        row = connection.execute(select(deployments).where(deployments.c.name == spec.name)).first()
        if row is None:
            connection.execute(
                deployments.insert().values(
                    name=spec.name,
                    revision=1,
                    replicas=spec.replicas,
                    previous_revision=None,
                    rollout_state="progressing",
                    rollout_message="",
                    created_at=now,
                    updated_at=now,
                )
            )
            connection.execute(
                revisions.insert().values(deployment=spec.name, revision=1, **values)
            )
            return _record(connection, _find(connection, spec.name))
        current = _revision(connection, spec.name, row.revision)
        assert current is not None
        changes: dict[str, Any] = {"replicas": spec.replicas, "updated_at": now}
        if not _same(spec, pinned, current):
            latest = connection.execute(
                select(func.max(revisions.c.revision)).where(revisions.c.deployment == spec.name)
            ).scalar_one()
            number = int(latest) + 1
            connection.execute(
                revisions.insert().values(deployment=spec.name, revision=number, **values)
            )
            _tell_nodes(connection, spec.name)
            changes |= {
                "revision": number,
                "previous_revision": row.revision,
                "rollout_state": "progressing",
                "rollout_message": "",
            }
        connection.execute(
            update(deployments).where(deployments.c.name == spec.name).values(**changes)
        )
        return _record(connection, _find(connection, spec.name))


def list_deployments(db: Database) -> list[Deployment]:
    with db.read() as connection:
        rows = connection.execute(select(deployments).order_by(deployments.c.name)).all()
        return [_record(connection, row) for row in rows]


def get_deployment(db: Database, name: str) -> Deployment:
    with db.read() as connection:
        return _record(connection, _find(connection, name))


def delete_deployment(db: Database, name: str) -> None:
    """Forget the deployment; the nodes that run its replicas stop them at their next beat."""
    with db.write() as connection:
        _find(connection, name)
        _tell_nodes(connection, name)
        connection.execute(delete(replicas).where(replicas.c.deployment == name))
        connection.execute(delete(revisions).where(revisions.c.deployment == name))
        connection.execute(delete(deployments).where(deployments.c.name == name))


def scale(db: Database, name: str, count: int, *, now: float) -> Deployment:
    with db.write() as connection:
        _find(connection, name)
        connection.execute(
            update(deployments)
            .where(deployments.c.name == name)
            .values(replicas=count, updated_at=now)
        )
        return _record(connection, _find(connection, name))


def rollback(db: Database, name: str, revision: int | None, *, now: float) -> Deployment:
    """Make an earlier revision current again (default: the one before the current)."""
    with db.write() as connection:
        row = _find(connection, name)
        target = revision if revision is not None else row.previous_revision
        if target is None:
            target = row.revision - 1
        if target < 1 or _revision(connection, name, target) is None:
            raise ControllerError(
                f"deployment {name} has no revision {target} to roll back to "
                f"(see `ukedge rollout history {name}`)",
                status=404 if revision is not None else 409,
            )
        if target != row.revision:
            _tell_nodes(connection, name)
            connection.execute(
                update(deployments)
                .where(deployments.c.name == name)
                .values(
                    revision=target,
                    previous_revision=row.revision,
                    rollout_state="progressing",
                    rollout_message=f"rolled back from revision {row.revision} on request",
                    updated_at=now,
                )
            )
        return _record(connection, _find(connection, name))


def list_revisions(db: Database, name: str) -> list[Revision]:
    with db.read() as connection:
        _find(connection, name)
        rows = connection.execute(
            select(revisions).where(revisions.c.deployment == name).order_by(revisions.c.revision)
        ).all()
    return [
        Revision(
            deployment=r.deployment,
            revision=r.revision,
            image_digest=r.image_digest,
            spec=DeploymentSpec.model_validate(r.spec),
            created_at=r.created_at,
            platforms=list(r.platforms or ()),
        )
        for r in rows
    ]


def list_replicas(
    db: Database, *, deployment: str | None = None, node: str | None = None
) -> list[ReplicaRecord]:
    query = select(replicas, nodes.c.name.label("node_name")).outerjoin(
        nodes, nodes.c.id == replicas.c.node_id
    )
    with db.read() as connection:
        if deployment is not None:
            _find(connection, deployment)
            query = query.where(replicas.c.deployment == deployment)
        if node is not None:
            query = query.where(replicas.c.node_id == find_node(connection, node).id)
        rows = connection.execute(query.order_by(replicas.c.deployment, replicas.c.replica)).all()
    records = []
    for r in rows:
        report = r.report or {}
        records.append(
            ReplicaRecord(
                deployment=r.deployment,
                replica=r.replica,
                revision=r.revision,
                node_id=r.node_id,
                node_name=r.node_name,
                instance=report.get("name"),
                state=r.state,
                health=report.get("health"),
                instance_state=report.get("state"),
                ports=report.get("ports") or [],
            )
        )
    return records
