"""Where new replicas go: a pure, deterministic function of the deployment, nodes and replicas.

Filters (a node is a candidate only if all hold): schedulable (Ready, not cordoned, not
draining), not excluded, of one of the deployment's architectures (none listed: any), labels
include the selector, and the deployment's resources fit in what is free there: capacity minus
``reserved`` minus what the replicas already assigned to it hold. Every replica holds its
resources except a FAILED one (its VM has ended and the node gave up restarting it); a LOST
replica still holds them, since its node may come back with it running.

Among candidates the order is lexicographic, most important first:

1. spread over the values of ``spread_by``: the zone with the fewest replicas of this revision
   (nodes without the label only when no labelled node fits), so zones never differ by more
   than one while capacity allows;
2. spread over nodes: fewest replicas of this revision on the node (a second replica shares a
   node only when every candidate has one);
3. bytes of the image's layers already cached on the node (edge links are slow);
4. the strategy: ``least-allocated`` prefers the node left with the largest free share,
   ``bin-pack`` the smallest (mean over memory and vCPUs of free / capacity after placing);
5. node id, so that equal nodes never depend on input order.

Replicas are placed one at a time and each placement updates the running totals, so a batch
never over-commits a node. Nodes sit in one heap per zone and zones in a heap of their own;
a placement changes one node and one zone only, so each replica costs O(log n) and scheduling
``count`` replicas over ``n`` nodes and ``r`` existing replicas costs O(r + (n + count) log n).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence

from ukedge.controller._fleet import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    Resources,
    ScoringStrategy,
)

__all__ = ["holds_resources", "matches", "node_usage", "per_node_targets", "schedule"]

_NodeKey = tuple[int, int, float, str]
# The zone itself last: never compared, since a node (and so a top key) is in one zone only.
_ZoneEntry = tuple[tuple[int, int], _NodeKey, str | None]


def holds_resources(replica: ReplicaView) -> bool:
    """Whether ``replica`` keeps its resources committed on its node."""
    return replica.node_id is not None and replica.state is not ReplicaState.FAILED


def node_usage(replicas: Iterable[ReplicaView]) -> dict[str, Resources]:
    """What the replicas hold on each node (node id -> summed resources)."""
    used: dict[str, Resources] = defaultdict(Resources)
    for replica in replicas:
        if replica.node_id is not None and holds_resources(replica):
            used[replica.node_id] += replica.resources
    return dict(used)


def matches(deployment: DeploymentView, node: NodeView) -> bool:
    """Whether ``node`` is of the deployment's kind (architecture, labels); schedulable or not."""
    if deployment.architectures and node.architecture not in deployment.architectures:
        return False
    labels = node.labels
    return all(labels.get(key) == value for key, value in deployment.selector.items())


def per_node_targets(deployment: DeploymentView, nodes: Sequence[NodeView]) -> list[str]:
    """Nodes that should each run one replica of a per-node deployment, sorted by id.

    Only schedulable nodes become targets; whether the replica fits is the planner's check,
    as it is for every placement.
    """
    return sorted(node.id for node in nodes if node.schedulable and matches(deployment, node))


def _free_share(free: Resources, capacity: Resources) -> float:
    shares = [
        free_part / cap
        for free_part, cap in (
            (free.memory_mib, capacity.memory_mib),
            (free.vcpus, capacity.vcpus),
        )
        if cap > 0
    ]
    return sum(shares) / len(shares) if shares else 0.0


def schedule(
    deployment: DeploymentView,
    count: int,
    nodes: Sequence[NodeView],
    replicas: Sequence[ReplicaView],
    *,
    strategy: ScoringStrategy = "least-allocated",
    exclude: Collection[str] = (),
) -> list[str | None]:
    """The node for each of ``count`` new replicas of ``deployment`` (None: no node fits).

    ``replicas`` are every existing replica of every deployment (they hold resources);
    ``exclude`` names nodes not to use. The same input always gives the same output.
    """
    if count <= 0:
        return []
    need = deployment.resources
    excluded = frozenset(exclude)
    used = node_usage(replicas)
    mine_on_node: Counter[str] = Counter()
    for replica in replicas:
        if (
            replica.deployment == deployment.name
            and replica.revision == deployment.revision
            and replica.node_id is not None
            and holds_resources(replica)
        ):
            mine_on_node[replica.node_id] += 1

    spread_by = deployment.spread_by
    candidates: dict[str, NodeView] = {}
    for node in nodes:
        if node.id in excluded or not node.schedulable or not matches(deployment, node):
            continue
        candidates[node.id] = node
    zone_of: dict[str, str | None] = {
        node_id: (node.labels.get(spread_by) if spread_by is not None else "")
        for node_id, node in candidates.items()
    }
    zone_count: Counter[str | None] = Counter()
    if spread_by is not None:
        labels_of = {node.id: node.labels for node in nodes}
        for node_id, mine in mine_on_node.items():
            if node_id in labels_of:
                zone_count[labels_of[node_id].get(spread_by)] += mine
    sign = -1.0 if strategy == "least-allocated" else 1.0
    layers = deployment.layers.items()
    cached = {
        node_id: sum(size for digest, size in layers if digest in node.cached_layers)
        for node_id, node in candidates.items()
    }

    current: dict[str, _NodeKey] = {}

    def key_of(node_id: str) -> _NodeKey | None:
        node = candidates[node_id]
        free = node.capacity - node.reserved - used.get(node_id, Resources())
        if not need.fits_in(free):
            return None
        share = _free_share(free - need, node.capacity)
        return (mine_on_node[node_id], -cached[node_id], sign * share, node_id)

    zone_heaps: dict[str | None, list[_NodeKey]] = defaultdict(list)
    for node_id in candidates:
        key = key_of(node_id)
        if key is not None:
            current[node_id] = key
            zone_heaps[zone_of[node_id]].append(key)
    for heap in zone_heaps.values():
        heapq.heapify(heap)

    zone_current: dict[str | None, _ZoneEntry] = {}
    zone_heap: list[_ZoneEntry] = []

    def refresh_zone(zone: str | None) -> None:
        heap = zone_heaps[zone]
        while heap and current.get(heap[0][3]) != heap[0]:
            heapq.heappop(heap)
        if not heap:
            zone_current.pop(zone, None)
            return
        entry: _ZoneEntry = ((0 if zone is not None else 1, zone_count[zone]), heap[0], zone)
        zone_current[zone] = entry
        heapq.heappush(zone_heap, entry)

    for zone in list(zone_heaps):
        refresh_zone(zone)

    placed: list[str | None] = []
    while len(placed) < count:
        while zone_heap:
            entry = heapq.heappop(zone_heap)
            zone = entry[2]
            if zone_current.get(zone) == entry:
                break
        else:
            break
        node_id = entry[1][3]
        placed.append(node_id)
        used[node_id] = used.get(node_id, Resources()) + need
        mine_on_node[node_id] += 1
        zone_count[zone] += 1
        key = key_of(node_id)
        if key is None:
            current.pop(node_id, None)
        else:
            current[node_id] = key
            heapq.heappush(zone_heaps[zone], key)
        refresh_zone(zone)
    placed.extend([None] * (count - len(placed)))
    return placed
