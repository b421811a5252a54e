"""Which replicas of draining nodes to move rather than replace, and where (pure).

A node drained with ``--migrate`` keeps its replicas' memory: each running replica of the
deployment's current revision gets a move (:mod:`ukedge.controller._moves`) to a node the
scheduler picks among those that take part in moves. The planner leaves the replicas in
``keep`` alone (no make-before-break replacement while a move is under way or about to start);
every other replica of the node (not running, an old revision, a per-node deployment, a move
tried :data:`~ukedge.controller._moves.MAX_ATTEMPTS` times, no node that could take it) is
replaced as for any drain, and ``fallbacks`` says why, for the event stream.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ukedge.controller._fleet import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    ScoringStrategy,
)
from ukedge.controller._moves import MAX_ATTEMPTS, Move, MoveState, start
from ukedge.controller._scheduler import schedule
from ukedge.host.link import MoveMode

__all__ = ["MovePlan", "plan_moves"]


@dataclass(frozen=True)
class MovePlan:
    start: list[Move] = field(default_factory=list)
    #: (deployment, replica) the planner must not replace: moving, or starting to.
    keep: set[tuple[str, str]] = field(default_factory=set)
    #: (deployment, replica, why it is replaced instead of moved).
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)


def plan_moves(
    deployments: Sequence[DeploymentView],
    nodes: Sequence[NodeView],
    replicas: Sequence[ReplicaView],
    moves: Sequence[Move],
    *,
    migrate: Mapping[str, MoveMode],
    movable: Collection[str],
    instance_name: Callable[[str, str], str],
    now: float,
    new_id: Callable[[], str],
    strategy: ScoringStrategy = "least-allocated",
) -> MovePlan:
    """Moves to start for the replicas on the nodes in ``migrate`` (node id -> mode).

    ``moves`` are the tries of the nodes' current drains and every try under way (ended ones
    count towards the attempts), ``movable`` the nodes that report a migration host. A node's
    replicas are considered only while it is draining and ready.
    """
    by_name = {d.name: d for d in deployments}
    by_node = {n.id: n for n in nodes}
    plan = MovePlan()
    not_movable = [n.id for n in nodes if n.id not in movable]
    placed: list[ReplicaView] = []  # the moves planned in this pass hold their targets' room
    for replica in sorted(replicas, key=lambda r: (r.deployment, r.replica)):
        source = by_node.get(replica.node_id or "")
        if source is None or source.id not in migrate or not source.draining or not source.ready:
            continue
        key = (replica.deployment, replica.replica)
        tries = sorted(
            (m for m in moves if (m.deployment, m.replica) == key and m.source == source.id),
            key=lambda m: (m.started_at, m.attempt),
        )
        if any(m.state.active for m in tries):
            plan.keep.add(key)
            continue
        if any(m.state == MoveState.DONE for m in tries):
            continue  # recorded on its target already; the planner sees it there
        deployment = by_name.get(replica.deployment)
        why = None
        if deployment is None or deployment.mode == "per-node":
            continue  # removed with the node's drain, nothing to move to
        if replica.revision != deployment.revision:
            why = "an old revision is replaced by the current one"
        elif replica.state != ReplicaState.RUNNING:
            why = f"it is {replica.state.value}, only a running instance moves"
        elif source.id not in movable:
            why = f"node {source.name} takes no part in moves (no migration host)"
        elif len(tries) >= MAX_ATTEMPTS:
            why = f"moving it failed {len(tries)} times: {tries[-1].error}"
        if why is None:
            (target,) = schedule(
                deployment,
                1,
                nodes,
                [*replicas, *placed],
                strategy=strategy,
                exclude={source.id, *not_movable},
            )
            if target is None:
                why = "no node that takes part in moves fits it"
            else:
                plan.start.append(
                    start(
                        new_id(),
                        deployment=replica.deployment,
                        replica=replica.replica,
                        instance=instance_name(replica.deployment, replica.replica),
                        source=source.id,
                        target=target,
                        mode=migrate[source.id],
                        now=now,
                        attempt=len(tries) + 1,
                    )
                )
                placed.append(replace(replica, node_id=target))
                plan.keep.add(key)
                continue
        plan.fallbacks.append((replica.deployment, replica.replica, why))
    return plan
