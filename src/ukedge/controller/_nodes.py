"""Nodes: enrolment, the operator's changes (labels, cordon, drain, removal), their records.

A node enrols once with a join token and gets an id and a credential of its own; only a hash of
the credential is kept. Labels are what the node reports plus the operator's changes, kept apart
(``label_overrides``) so that neither a heartbeat undoes ``node label`` nor a label the operator
never touched goes stale when the node's own configuration changes. Each change is one
transaction; a change that alters where replicas may run takes effect at the leader's next pass.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from ukedge.controller._db import Database, nodes, replicas
from ukedge.controller._models import NodeRecord, NodeStatus
from ukedge.controller._tokens import hash_secret, spend_token
from ukedge.errors import ControllerError
from ukedge.host.link import EnrolReply, EnrolRequest

__all__ = [
    "authenticate_node",
    "bump_generations",
    "delete_node",
    "effective_labels",
    "enrol",
    "find_node",
    "list_nodes",
    "node_record",
    "set_flags",
    "set_labels",
]


def effective_labels(row: Row[Any]) -> dict[str, str]:
    labels = dict(row.labels or {})
    overrides = row.label_overrides or {}
    labels.update(overrides.get("set", {}))
    for key in overrides.get("remove", []):
        labels.pop(key, None)
    return labels


def enrol(db: Database, request: EnrolRequest, *, now: float, interval: float) -> EnrolReply:
    """Spend a use of the token and record the node, in one transaction."""
    node_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    try:
        with db.write() as connection:
            token_id = spend_token(connection, request.token, now)
            connection.execute(
                nodes.insert().values(
                    id=node_id,
                    name=request.name,
                    credential_hash=hash_secret(secret),
                    token_id=token_id,
                    labels=request.labels,
                    label_overrides={},
                    architecture=request.architecture,
                    accelerator="",
                    cached_layers=[],
                    enrolled_at=now,
                    last_heartbeat=now,
                    ready=True,
                    generation=1,
                    applied_generation=0,
                )
            )
    except IntegrityError:
        raise ControllerError(
            f"a node named {request.name!r} is enrolled already: remove it first "
            "(`ukedge node rm NAME`) or start the agent with another --name",
            status=409,
        ) from None
    return EnrolReply(node_id=node_id, credential=secret, heartbeat_interval_s=interval)


_NODE_BY_ID = select(nodes).where(nodes.c.id == bindparam("node_id"))


def authenticate_node(connection: Connection, node_id: str, credential: str) -> Row[Any]:
    """The node's row when ``credential`` is its own; refuses in constant time otherwise."""
    row = connection.execute(_NODE_BY_ID, {"node_id": node_id}).first()
    expected = row.credential_hash if row is not None else hash_secret(secrets.token_hex(16))
    if not hmac.compare_digest(expected, hash_secret(credential)) or row is None:
        raise ControllerError(
            f"node {node_id}: unknown or wrong credential (was the node removed? enrol it "
            "again with a join token)",
            status=401,
        )
    return row


def find_node(connection: Connection, key: str) -> Row[Any]:
    """A node by id or name."""
    row = connection.execute(
        select(nodes).where(or_(nodes.c.id == key, nodes.c.name == key))
    ).first()
    if row is None:
        raise ControllerError(f"no node {key!r} (see `ukedge node ls`)", status=404)
    return row


def node_record(row: Row[Any]) -> NodeRecord:
    return NodeRecord(
        id=row.id,
        name=row.name,
        status=NodeStatus.READY if row.ready else NodeStatus.NOT_READY,
        cordoned=row.cordoned,
        draining=row.draining,
        architecture=row.architecture,
        accelerator=row.accelerator,
        accelerators=row.accelerators or {},
        labels=effective_labels(row),
        capacity_memory_mib=row.capacity_memory_mib,
        capacity_vcpus=row.capacity_vcpus,
        allocated_memory_mib=row.allocated_memory_mib,
        allocated_vcpus=row.allocated_vcpus,
        instances=row.instances,
        last_heartbeat=row.last_heartbeat,
        enrolled_at=row.enrolled_at,
        drain_migrate=row.drain_migrate if row.draining else None,
        drain_postcopy=bool(row.drain_postcopy) and row.draining,
        migration_host=row.migration_host,
    )


def list_nodes(db: Database) -> list[NodeRecord]:
    with db.read() as connection:
        rows = connection.execute(select(nodes).order_by(nodes.c.name)).all()
    return [node_record(r) for r in rows]


def set_labels(
    db: Database, key: str, set_: Mapping[str, str], remove: Sequence[str]
) -> NodeRecord:
    with db.write() as connection:
        row = find_node(connection, key)
        overrides = dict(row.label_overrides or {})
        to_set = {**overrides.get("set", {}), **set_}
        to_remove = sorted((set(overrides.get("remove", [])) - set(set_)) | set(remove))
        for name in remove:
            to_set.pop(name, None)
        connection.execute(
            update(nodes)
            .where(nodes.c.id == row.id)
            .values(label_overrides={"set": to_set, "remove": to_remove})
        )
        return node_record(find_node(connection, row.id))


def set_flags(db: Database, key: str, **flags: object) -> NodeRecord:
    """Cordon, uncordon or drain (``cordoned=…``, ``draining=…``, ``drain_migrate=…``,
    ``drained_at=…``)."""
    with db.write() as connection:
        row = find_node(connection, key)
        connection.execute(update(nodes).where(nodes.c.id == row.id).values(**flags))
        return node_record(find_node(connection, row.id))


def delete_node(db: Database, key: str) -> None:
    """Forget a node: its credential stops working; its replicas are placed elsewhere."""
    with db.write() as connection:
        row = find_node(connection, key)
        # Replicas lose their node (the planner places them again); done here rather than by
        # ON DELETE SET NULL, which SQLite enforces only with foreign keys on.
        connection.execute(
            update(replicas)
            .where(replicas.c.node_id == row.id)
            .values(node_id=None, state="pending", report=None)
        )
        connection.execute(delete(nodes).where(nodes.c.id == row.id))


def bump_generations(connection: Connection, node_ids: set[str]) -> None:
    """The desired state of these nodes changed: their next heartbeat gets it."""
    if node_ids:
        connection.execute(
            update(nodes)
            .where(nodes.c.id.in_(sorted(node_ids)))
            .values(generation=nodes.c.generation + 1)
        )
