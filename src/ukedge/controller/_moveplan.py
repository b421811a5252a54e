"""Which replicas of draining nodes to move rather than replace, and where (pure).

A node drained with ``--migrate`` keeps its replicas' memory: each running replica of the
deployment's current revision gets a move (:mod:`ukedge.controller._moves`) to a node the
scheduler picks among those that take part in moves. The planner leaves the replicas in
``keep`` alone (no make-before-break replacement while a move is under way or about to start);
every other replica of the node (not running, an old revision, a per-node deployment, a move
tried :data:`~ukedge.controller._moves.MAX_ATTEMPTS` times, no node that could take it) is
replaced as for any drain, and ``fallbacks`` says why, for the event stream.

Rebalancing (:func:`plan_rebalance`, the controller's ``rebalance_above`` setting) moves
replicas off a node whose allocated memory share is above a threshold, one move per node at a
time, to a node that takes part in moves and stays at or below the threshold with it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ukedge.controller._fleet import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    Resources,
    ScoringStrategy,
)
from ukedge.controller._moves import MAX_ATTEMPTS, Move, MoveState, start
from ukedge.controller._scheduler import Ledger, schedule
from ukedge.host.link import MoveMode

__all__ = ["REBALANCE_RETRY_S", "MovePlan", "memory_share", "plan_moves", "plan_rebalance"]

#: A replica whose rebalancing move failed is not tried again from that node for this long.
REBALANCE_RETRY_S = 600.0


@dataclass(frozen=True)
class MovePlan:
    start: list[Move] = field(default_factory=list)
    #: (deployment, replica) the planner must not replace: moving, or starting to.
    keep: set[tuple[str, str]] = field(default_factory=set)
    #: (deployment, replica, why it is replaced instead of moved).
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)
    #: Why moves start, or do not, beyond the above (rebalancing), for the event stream.
    events: list[str] = field(default_factory=list)


def plan_moves(
    deployments: Sequence[DeploymentView],
    nodes: Sequence[NodeView],
    replicas: Sequence[ReplicaView],
    moves: Sequence[Move],
    *,
    migrate: Mapping[str, MoveMode],
    movable: Collection[str],
    postcopy: Collection[str] = (),
    instance_name: Callable[[str, str], str],
    now: float,
    new_id: Callable[[], str],
    strategy: ScoringStrategy = "least-allocated",
) -> MovePlan:
    """Moves to start for the replicas on the nodes in ``migrate`` (node id -> mode); those
    of the nodes in ``postcopy`` (live drains that ask for it) switch to post-copy.

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
        elif tries and tries[-1].cancelled_at is not None:
            why = f"its move was cancelled: {tries[-1].error}"
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
                        postcopy=source.id in postcopy and migrate[source.id] == "live",
                    )
                )
                placed.append(replace(replica, node_id=target))
                plan.keep.add(key)
                continue
        plan.fallbacks.append((replica.deployment, replica.replica, why))
    return plan


def memory_share(node: NodeView, ledger: Ledger) -> float:
    """The share of the node's memory capacity that its replicas and other instances hold."""
    if node.capacity.memory_mib <= 0:
        return 0.0
    used = node.reserved.memory_mib + ledger.used.get(node.id, Resources()).memory_mib
    return used / node.capacity.memory_mib


def plan_rebalance(
    deployments: Sequence[DeploymentView],
    nodes: Sequence[NodeView],
    replicas: Sequence[ReplicaView],
    moves: Sequence[Move],
    *,
    above: float,
    mode: MoveMode,
    movable: Collection[str],
    instance_name: Callable[[str, str], str],
    now: float,
    new_id: Callable[[], str],
    strategy: ScoringStrategy = "least-allocated",
) -> MovePlan:
    """At most one move off each node (ready, taking part in moves, not draining) whose memory
    share is above ``above``, and none off or onto a node that has a move under way (or one
    planned in this pass): the replica of the current revision, running, that brings the node
    to the threshold or below with the least memory (else the largest), to a node the
    scheduler picks among the schedulable ones that take part in moves and stay at or below
    the threshold with it. A replica whose move off that node failed in the last
    :data:`REBALANCE_RETRY_S` is not tried again meanwhile. ``moves``: every move under way
    and those of the last :data:`REBALANCE_RETRY_S`."""
    by_name = {d.name: d for d in deployments}
    ledger = Ledger(replicas)
    current = list(replicas)  # with the moves planned in this pass on their targets
    plan = MovePlan()
    busy = {n for m in moves if m.state.active for n in (m.source, m.target)}
    moving = {(m.deployment, m.replica) for m in moves if m.state.active}
    failed = {
        (m.deployment, m.replica, m.source)
        for m in moves
        if m.state == MoveState.FAILED and now - m.updated_at < REBALANCE_RETRY_S
    }
    candidates = [n for n in nodes if n.id in movable and n.ready and not n.draining]
    for source in sorted(candidates, key=lambda n: (-memory_share(n, ledger), n.id)):
        share = memory_share(source, ledger)
        if share <= above or source.id in busy:
            continue
        over = f"node {source.name} holds {share:.0%} of its memory, above {above:.0%}"
        movers = [
            r
            for r in replicas
            if r.node_id == source.id
            and r.state == ReplicaState.RUNNING
            and (r.deployment, r.replica) not in moving
            and (r.deployment, r.replica, source.id) not in failed
            and (d := by_name.get(r.deployment)) is not None
            and d.mode != "per-node"
            and r.revision == d.revision
            and r.resources.memory_mib > 0
        ]
        if not movers:
            plan.events.append(f"{over}, but none of its replicas can move now")
            continue
        limit = above * source.capacity.memory_mib
        used = share * source.capacity.memory_mib
        enough = [r for r in movers if used - r.resources.memory_mib <= limit]
        order = (
            sorted(enough, key=lambda r: (r.resources.memory_mib, r.deployment, r.replica))
            if enough
            else sorted(movers, key=lambda r: (-r.resources.memory_mib, r.deployment, r.replica))
        )
        started = False
        for replica in order:
            deployment = by_name[replica.deployment]
            full = {
                n.id
                for n in nodes
                if memory_share(n, ledger)
                + replica.resources.memory_mib / max(n.capacity.memory_mib, 1)
                > above
            }
            not_movable = {n.id for n in nodes if n.id not in movable}
            (target,) = schedule(
                deployment,
                1,
                nodes,
                current,
                strategy=strategy,
                exclude={source.id, *busy, *full, *not_movable},
            )
            if target is None:
                continue
            move = start(
                new_id(),
                deployment=replica.deployment,
                replica=replica.replica,
                instance=instance_name(replica.deployment, replica.replica),
                source=source.id,
                target=target,
                mode=mode,
                now=now,
            )
            plan.start.append(move)
            plan.keep.add((replica.deployment, replica.replica))
            moved = replace(replica, node_id=target)
            ledger.release(replica)
            ledger.take(moved)
            current = [moved if r is replica else r for r in current]
            busy |= {source.id, target}
            target_name = next(n.name for n in nodes if n.id == target)
            plan.events.append(
                f"{over}: moving replica {replica.replica} of {replica.deployment} to node "
                f"{target_name} ({mode})"
            )
            started = True
            break
        if not started:
            plan.events.append(
                f"{over}, but no node that takes part in moves has room for one of its replicas "
                f"and stays at or below {above:.0%}"
            )
    return plan
