"""The reconciler's decisions: from the fleet as it is to the replicas to add and remove.

:func:`plan` is pure; the controller's loop reads the views, calls it, and writes the plan in one
transaction, so a standby that takes over replays the same decisions. A plan applied to a fleet
that has not changed since gives an empty plan (it converges), and it never takes a RUNNING
replica away while that would leave the deployment with fewer running replicas than it wants,
except where the replica cannot stay (its node is gone or no longer matches).

A replica is, for its deployment's plan, one of:

- *gone*: its node was removed (or it never got one): removed, and replaced;
- *failed*: FAILED, its node's restart policy gave up: removed, and replaced;
- *lost*: its node is NotReady and was last seen more than ``grace_s`` ago, and the deployment's
  ``autonomy_s`` has elapsed since too: kept (so that, when the node comes back, nothing that
  still runs there restarts) but not counted, so a replacement is placed elsewhere; once the node
  is back the replica counts again and the surplus goes, not-yet-running ones and the newest
  first, which removes the replacement rather than the replica that kept running;
- *leaving*: of the current revision on a draining node: replaced elsewhere first, then removed
  once enough replicas run elsewhere (make-before-break); not-running ones go at once (earlier
  revisions there are the rolling update's);
- *old*: of an earlier revision than the deployment's: a rolling update, bounded by
  ``max_surge`` new replicas above the desired count and at least ``replicas - max_unavailable``
  available ones (running, or completed: a job that finished counts as done, not as missing);
- *current*: counted against the desired count.

A rollout whose new replicas fail (FAILED, or UNHEALTHY for longer than ``grace_s`` after
assignment, the start-up grace) while replicas of the earlier revision still run is rolled back:
the plan reports the revision to return to and decides nothing more for that deployment; the
store makes that revision current and the next pass rolls it out with the same rules. Once no
earlier replica is left the rollout is over, and a failing replica is only replaced.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from ukedge.controller._fleet import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    Resources,
    ScoringStrategy,
)
from ukedge.controller._scheduler import (
    Ledger,
    holds_resources,
    matches,
    per_node_targets,
    place,
)

__all__ = ["Plan", "plan"]

_NOTHING = Resources()


@dataclass(frozen=True)
class Plan:
    """What one reconciler pass decided; ``events`` say why, one line each."""

    add: list[ReplicaView] = field(default_factory=list)
    remove: list[ReplicaView] = field(default_factory=list)
    #: deployment -> the revision to return to (its new revision's replicas failed)
    rollbacks: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)


def _running(replica: ReplicaView) -> bool:
    return replica.state is ReplicaState.RUNNING


def _available(replica: ReplicaView) -> bool:
    """A rollout counts available replicas, not only running ones: a new revision whose
    replicas complete would otherwise keep the old revision's running beside them forever."""
    return replica.state.available


def _removal_order(replicas: Iterable[ReplicaView]) -> list[ReplicaView]:
    """Which to remove first: not running before running, then the newest (last assigned)."""
    by_id = sorted(replicas, key=lambda r: r.replica, reverse=True)
    return sorted(by_id, key=lambda r: (_running(r), -r.assigned_at))


@dataclass
class _Sorted:
    """One deployment's replicas by what the plan does with them (see the module docstring)."""

    current: list[ReplicaView] = field(default_factory=list)
    old: list[ReplicaView] = field(default_factory=list)
    leaving: list[ReplicaView] = field(default_factory=list)
    #: (replica, why) for replicas to remove and replace: gone, failed, no longer matching
    dropped: list[tuple[ReplicaView, str]] = field(default_factory=list)
    #: (replica, why) for lost replicas, kept but not counted
    lost: list[tuple[ReplicaView, str]] = field(default_factory=list)


class _Pass:
    """The running state of one planning pass: the fleet as it will be once the plan applies."""

    def __init__(
        self,
        nodes: Sequence[NodeView],
        replicas: Sequence[ReplicaView],
        *,
        now: float,
        grace_s: float,
        strategy: ScoringStrategy,
        new_id: Callable[[], str],
        keep: Collection[tuple[str, str]] = (),
    ) -> None:
        self.nodes = list(nodes)
        self.keep = frozenset(keep)
        self.by_id = {node.id: node for node in nodes}
        self.ledger = Ledger(replicas)
        self.now = now
        self.grace_s = grace_s
        self.strategy: ScoringStrategy = strategy
        self.new_id = new_id
        self.plan = Plan()

    def event(self, deployment: DeploymentView, text: str) -> None:
        self.plan.events.append(f"deployment {deployment.name}: {text}")

    def remove(self, replica: ReplicaView) -> None:
        self.plan.remove.append(replica)
        self.ledger.release(replica)

    def add(self, deployment: DeploymentView, node_id: str) -> ReplicaView:
        replica = ReplicaView(
            deployment=deployment.name,
            replica=self.new_id(),
            revision=deployment.revision,
            node_id=node_id,
            resources=deployment.resources,
            assigned_at=self.now,
            host_ports=deployment.host_ports,
        )
        self.plan.add.append(replica)
        self.ledger.take(replica)
        return replica

    def away_s(self, node: NodeView) -> float:
        return math.inf if node.last_seen is None else self.now - node.last_seen

    def lost(self, deployment: DeploymentView, node: NodeView) -> bool:
        """Whether the node's replicas are to be replaced: NotReady, away longer than the grace
        period and than the deployment's autonomy (within it a gap is better than a duplicate)."""
        away = self.away_s(node)
        return not node.ready and away > self.grace_s and away >= deployment.autonomy_s

    def sort(self, deployment: DeploymentView, replicas: Iterable[ReplicaView]) -> _Sorted:
        out = _Sorted()
        for replica in sorted(replicas, key=lambda r: r.replica):
            node = self.by_id.get(replica.node_id) if replica.node_id is not None else None
            where = f"replica {replica.replica} on node {replica.node_id}"
            if node is None:
                out.dropped.append((replica, f"{where}: the node is gone"))
            elif replica.state is ReplicaState.FAILED:
                out.dropped.append((replica, f"{where} failed"))
            elif deployment.mode == "per-node" and not matches(deployment, node):
                out.dropped.append((replica, f"{where}: the node no longer matches"))
            elif deployment.mode == "per-node" and node.draining:
                out.dropped.append((replica, f"{where}: the node is draining"))
            elif (
                replica.state is ReplicaState.COMPLETED
                and replica.revision == deployment.revision
                and not node.draining
            ):
                out.current.append(replica)  # done: needs nothing more from its node
            elif self.lost(deployment, node):
                away = self.away_s(node)
                seen = "never seen" if math.isinf(away) else f"NotReady for {away:.0f} s"
                out.lost.append((replica, f"{where} lost ({seen})"))
            elif (
                node.draining
                and replica.revision == deployment.revision
                and (replica.deployment, replica.replica) not in self.keep
            ):
                out.leaving.append(replica)
            elif replica.revision != deployment.revision:
                out.old.append(replica)
            else:
                out.current.append(replica)
        return out

    def failed_rollout(self, deployment: DeploymentView, sorted_: _Sorted) -> str | None:
        """Why the deployment's rollout must be rolled back, or None."""
        if deployment.previous_revision is None:
            return None
        if not sorted_.old:
            return None
        new = [r for r in sorted_.current + sorted_.leaving if r.revision == deployment.revision]
        new += [r for r, _ in sorted_.dropped if r.revision == deployment.revision]
        for replica in sorted(new, key=lambda r: r.replica):
            if replica.state is ReplicaState.FAILED:
                return f"replica {replica.replica} of revision {replica.revision} failed"
            if (
                replica.state is ReplicaState.UNHEALTHY
                and self.now - replica.assigned_at > self.grace_s
            ):
                up = self.now - replica.assigned_at
                return (
                    f"replica {replica.replica} of revision {replica.revision} "
                    f"is unhealthy {up:.0f} s after start"
                )
        return None


#: The second half of a deployment's plan: its placements, made once every removal is known.
_Placing = Callable[[], None]


def _nothing() -> None:
    return None


def _plan_replicated(ctx: _Pass, deployment: DeploymentView, sorted_: _Sorted) -> _Placing:
    want = deployment.replicas
    for replica, why in sorted_.dropped:
        ctx.remove(replica)
        ctx.event(deployment, f"{why}; removing it")
    current, old, leaving = sorted_.current, sorted_.old, sorted_.leaving
    available = sum(1 for r in current + old + leaving if _available(r))
    running_current = sum(1 for r in current + leaving if _running(r))

    # Draining nodes: what does not run there goes now; what runs goes once as many replicas of
    # this revision run as are wanted without it. (Earlier revisions there are the rollout's.)
    for replica in _removal_order(leaving):
        if not _running(replica) or running_current - 1 >= want:
            available -= _available(replica)
            running_current -= _running(replica)
            ctx.remove(replica)
            ctx.event(
                deployment,
                f"replica {replica.replica} leaves draining node {replica.node_id}; removing it",
            )

    # Rolling update: earlier revisions go while enough replicas stay running.
    keep_running = want - deployment.max_unavailable
    kept_old: list[ReplicaView] = []
    for replica in _removal_order(old):
        if not _running(replica) or available - 1 >= keep_running:
            available -= _available(replica)
            ctx.remove(replica)
            ctx.event(
                deployment,
                f"replica {replica.replica} on node {replica.node_id} runs revision "
                f"{replica.revision}; removing it for revision {deployment.revision}",
            )
        else:
            kept_old.append(replica)

    # Scale down (or a node came back): not running first, then the newest.
    surplus = len(current) - want
    if surplus > 0:
        for replica in _removal_order(current)[:surplus]:
            ctx.remove(replica)
            ctx.event(
                deployment,
                f"{len(current)} replicas of {want} wanted; removing {replica.replica} "
                f"on node {replica.node_id}",
            )

    missing = want - len(current)
    room = want + deployment.max_surge - len(current) - len(kept_old)
    count = max(0, min(missing, room))
    if count == 0:
        return _nothing
    reasons = [why for _, why in sorted_.dropped]
    reasons += [why for _, why in sorted_.lost]
    reasons += [f"replica {r.replica} on draining node {r.node_id}" for r in leaving]
    if old:
        reasons += [f"rolling out revision {deployment.revision}"] * count

    def placing() -> None:
        targets = place(deployment, count, ctx.nodes, ctx.ledger, strategy=ctx.strategy)
        for index, node_id in enumerate(targets):
            reason = reasons[index] if index < len(reasons) else f"{want} replicas wanted"
            if node_id is None:
                ctx.event(
                    deployment,
                    f"{reason}; no node fits {count - index} more replica(s) "
                    f"({deployment.memory_mib} MiB, {deployment.vcpus} vCPU)",
                )
                return
            added = ctx.add(deployment, node_id)
            ctx.event(deployment, f"{reason}; placing {added.replica} on {node_id}")

    return placing


def _plan_per_node(ctx: _Pass, deployment: DeploymentView, sorted_: _Sorted) -> _Placing:
    # (No replica is ever leaving here: a draining node's are dropped, there is no elsewhere.)
    for replica, why in sorted_.dropped:
        ctx.remove(replica)
        ctx.event(deployment, f"{why}; removing it")

    def drop(replica: ReplicaView, reason: str) -> None:
        ctx.remove(replica)
        ctx.event(deployment, f"replica {replica.replica} on node {replica.node_id}: {reason}")

    current: dict[str, list[ReplicaView]] = defaultdict(list)
    old: dict[str, list[ReplicaView]] = defaultdict(list)
    for replica in sorted_.current:
        current[str(replica.node_id)].append(replica)
    for replica in sorted_.old:
        old[str(replica.node_id)].append(replica)
    targets = frozenset(per_node_targets(deployment, ctx.nodes))
    slots = sorted(targets | set(current) | set(old))

    # One replica a node: the surplus goes (not running first, then the newest); an earlier
    # revision goes once the new one runs beside it (or has completed there).
    for node_id in slots:
        for group in (current[node_id], old[node_id]):
            for replica in _removal_order(group)[: max(0, len(group) - 1)]:
                drop(replica, "a second replica on one node; removing it")
                group.remove(replica)
        if current[node_id] and old[node_id] and _available(current[node_id][0]):
            drop(old[node_id].pop(), f"revision {deployment.revision} runs there; removing it")

    def placing() -> None:
        def fits(node: NodeView, leaving: ReplicaView | None = None) -> bool:
            """Room for one more replica, counting what ``leaving`` gives back (nothing when
            it holds nothing: a completed replica's machine is gone)."""
            freed, freed_ports = _NOTHING, frozenset[str]()
            if leaving is not None and holds_resources(leaving):
                freed, freed_ports = leaving.resources, leaving.host_ports
            return deployment.resources.fits_in(
                ctx.ledger.free(node) + freed
            ) and ctx.ledger.ports_free(node.id, deployment.host_ports, freed_ports)

        def put(node: NodeView, reason: str) -> None:
            added = ctx.add(deployment, node.id)
            ctx.event(deployment, f"{reason}; placing {added.replica} there")

        def replace(stale: ReplicaView, node: NodeView, reason: str) -> None:
            drop(stale, f"runs revision {stale.revision}; removing it")
            put(node, reason)

        # Nodes holding a replica, none available (a node with none yet takes nothing away).
        unavailable = sum(
            1
            for node_id in slots
            if (current[node_id] or old[node_id])
            and not any(_available(r) for r in current[node_id] + old[node_id])
        )
        unavailable_left = deployment.max_unavailable - unavailable
        surge_left = deployment.max_surge - sum(
            1 for node_id in slots if current[node_id] and old[node_id]
        )
        for node_id in slots:
            node = ctx.by_id[node_id]
            if current[node_id]:
                continue
            if not old[node_id]:
                if node_id not in targets:
                    continue
                if fits(node):
                    put(node, f"node {node_id} matches")
                else:
                    ctx.event(deployment, f"node {node_id} matches but has no room for it")
                continue
            if not node.ready:
                continue
            stale = old[node_id][0]
            why = f"revision {deployment.revision} replaces {stale.revision} on node {node_id}"
            if not _running(stale) and fits(node, stale):
                replace(stale, node, why)
            elif surge_left > 0 and fits(node):
                surge_left -= 1
                put(node, why)
            elif unavailable_left > 0 and fits(node, stale):
                unavailable_left -= 1
                replace(stale, node, why)
            elif fits(node, stale) and not fits(node):
                ctx.event(
                    deployment,
                    f"{why} waits: the new replica needs the old one's host ports or room, "
                    "and max_unavailable is used up (set it to 1 or more to replace in place)",
                )

    return placing


def plan(
    deployments: Sequence[DeploymentView],
    nodes: Sequence[NodeView],
    replicas: Sequence[ReplicaView],
    *,
    now: float,
    grace_s: float,
    strategy: ScoringStrategy = "least-allocated",
    new_id: Callable[[], str],
    keep: Collection[tuple[str, str]] = (),
) -> Plan:
    """One reconciler pass over every deployment, in name order so that the same input gives
    the same plan; a deployment's placements see those decided before it. ``keep``:
    (deployment, replica) on draining nodes that move instead of being replaced
    (:mod:`ukedge.controller._moveplan`); they count as serving where they are."""
    ctx = _Pass(
        nodes, replicas, now=now, grace_s=grace_s, strategy=strategy, new_id=new_id, keep=keep
    )
    mine: dict[str, list[ReplicaView]] = defaultdict(list)
    for replica in replicas:
        mine[replica.deployment].append(replica)
    known = {deployment.name for deployment in deployments}
    for name in sorted(set(mine) - known):
        for replica in sorted(mine[name], key=lambda r: r.replica):
            ctx.remove(replica)
            ctx.plan.events.append(
                f"deployment {name} is gone: removing replica {replica.replica} "
                f"on node {replica.node_id}"
            )
    # Every removal first, then every placement: a placement then sees all the room this pass
    # frees, so that the next pass over the same fleet finds nothing more to place.
    placings: list[_Placing] = []
    for deployment in sorted(deployments, key=lambda d: d.name):
        sorted_ = ctx.sort(deployment, mine[deployment.name])
        cause = ctx.failed_rollout(deployment, sorted_)
        if cause is not None and deployment.previous_revision is not None:
            ctx.plan.rollbacks[deployment.name] = deployment.previous_revision
            ctx.event(
                deployment,
                f"{cause}; rolling back to revision {deployment.previous_revision}",
            )
        elif deployment.mode == "per-node":
            placings.append(_plan_per_node(ctx, deployment, sorted_))
        else:
            placings.append(_plan_replicated(ctx, deployment, sorted_))
    for placing in placings:
        placing()
    return ctx.plan
