"""Where new replicas go: a pure, deterministic function of the deployment, nodes and replicas.

Filters (a node is a candidate only if all hold): schedulable (Ready, not cordoned, not
draining), not excluded, of one of the deployment's architectures (none listed: any) and of
one of its image's platforms (a multi-platform image spreads over nodes of each; none known:
any), labels include the selector, and the deployment's resources fit in what is free there:
capacity minus ``reserved`` minus what the replicas already assigned to it hold. Every replica
holds its resources except a FAILED one (its VM has ended and the node gave up restarting
it); a LOST replica still holds them, since its node may come back with it running.

Among candidates the order is lexicographic, most important first:

1. spread over the values of ``spread_by``: the zone with the fewest replicas of this revision
   on Ready nodes (nodes without the label only when no labelled node fits), so zones never
   differ by more than one while capacity allows;
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
    ReplicaView,
    Resources,
    ScoringStrategy,
)
from ukedge.controller._platforms import any_matches, platform_of

__all__ = ["Ledger", "holds_resources", "matches", "per_node_targets", "place", "schedule"]

_NOTHING = Resources()
_NodeKey = tuple[int, int, float, str]
# The zone itself last: never compared, since a node (and so a top key) is in one zone only.
_ZoneEntry = tuple[tuple[int, int], _NodeKey, str | None]


def holds_resources(replica: ReplicaView) -> bool:
    """Whether ``replica`` keeps its resources committed on its node (an ended one does not:
    its machine is gone)."""
    return replica.node_id is not None and not replica.state.ended


class Ledger:
    """Running totals over a set of replicas: what they hold on each node, and how many of each
    deployment revision sit on each node. The planner keeps one for a whole pass and updates it
    as it decides, so that placing for one deployment after another never re-reads every
    replica of the fleet.
    """

    def __init__(self, replicas: Iterable[ReplicaView] = ()) -> None:
        self.used: dict[str, Resources] = {}
        self.counts: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        #: Host ports the replicas hold on each node (two cannot publish the same one).
        self.ports: dict[str, Counter[str]] = defaultdict(Counter)
        for replica in replicas:
            self.take(replica)

    def take(self, replica: ReplicaView) -> None:
        if replica.node_id is None or not holds_resources(replica):
            return
        self.used[replica.node_id] = self.used.get(replica.node_id, _NOTHING) + replica.resources
        self.counts[(replica.deployment, replica.revision)][replica.node_id] += 1
        self.ports[replica.node_id].update(replica.host_ports)

    def release(self, replica: ReplicaView) -> None:
        if replica.node_id is None or not holds_resources(replica):
            return
        self.used[replica.node_id] = self.used[replica.node_id] - replica.resources
        self.counts[(replica.deployment, replica.revision)][replica.node_id] -= 1
        self.ports[replica.node_id].subtract(replica.host_ports)

    def free(self, node: NodeView) -> Resources:
        return node.capacity - node.reserved - self.used.get(node.id, _NOTHING)

    def ports_free(
        self, node_id: str, wanted: frozenset[str], freed: frozenset[str] = frozenset()
    ) -> bool:
        """Whether none of ``wanted`` is held on the node (once ``freed`` is given back)."""
        held = self.ports.get(node_id)
        if not wanted or not held:
            return True
        return all(held[port] - (port in freed) <= 0 for port in wanted)


def matches(deployment: DeploymentView, node: NodeView) -> bool:
    """Whether ``node`` is of the deployment's kind (architecture, image platform, labels);
    schedulable or not. A node whose architecture ukedge cannot read matches no deployment
    that names architectures or whose image names its platforms."""
    if deployment.architectures or deployment.platforms:
        node_platform = platform_of(node.architecture)
        if node_platform is None:
            return False
        if deployment.architectures and not any_matches(deployment.architectures, node_platform):
            return False
        if deployment.platforms and not any_matches(deployment.platforms, node_platform):
            return False
    labels = node.labels
    return all(labels.get(key) == value for key, value in deployment.selector.items())


def per_node_targets(deployment: DeploymentView, nodes: Sequence[NodeView]) -> list[str]:
    """Nodes that should each run one replica of a per-node deployment, sorted by id.

    Only schedulable nodes become targets; whether the replica fits is the planner's check,
    as it is for every placement.
    """
    return sorted(node.id for node in nodes if node.schedulable and matches(deployment, node))


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
    return place(deployment, count, nodes, Ledger(replicas), strategy=strategy, exclude=exclude)


def place(
    deployment: DeploymentView,
    count: int,
    nodes: Sequence[NodeView],
    ledger: Ledger,
    *,
    strategy: ScoringStrategy = "least-allocated",
    exclude: Collection[str] = (),
) -> list[str | None]:
    """:func:`schedule` over a :class:`Ledger` of the existing replicas (left unchanged)."""
    if count <= 0:
        return []
    need_mem, need_cpu = deployment.memory_mib, deployment.vcpus
    excluded = frozenset(exclude)
    held = ledger.counts.get((deployment.name, deployment.revision), Counter())
    mine_on_node = Counter({node_id: many for node_id, many in held.items() if many > 0})
    spread_by = deployment.spread_by
    zone_count: Counter[str | None] = Counter()
    if spread_by is not None:
        # A NotReady node's replicas serve nobody: its zone is as empty as they leave it.
        labels_of = {node.id: node.labels for node in nodes if node.ready}
        for node_id, mine in mine_on_node.items():
            if node_id in labels_of:
                zone_count[labels_of[node_id].get(spread_by)] += mine
    sign = -1.0 if strategy == "least-allocated" else 1.0
    layers = deployment.layers.items()

    # Per candidate, in plain ints (this is the hot loop): what was free before this call,
    # its capacity, its zone, its cached bytes; ``taken`` counts this call's placements.
    free_before: dict[str, tuple[int, int, int, int]] = {}
    cached: dict[str, int] = {}
    zone_of: dict[str, str | None] = {}
    taken: Counter[str] = Counter()
    current: dict[str, _NodeKey] = {}

    publishes = bool(deployment.host_ports)

    def key_of(node_id: str) -> _NodeKey | None:
        free_mem, free_cpu, cap_mem, cap_cpu = free_before[node_id]
        after = taken[node_id] + 1
        if publishes and after > 1:
            return None  # its host ports are this call's first placement's now
        free_mem -= after * need_mem
        free_cpu -= after * need_cpu
        if free_mem < 0 or free_cpu < 0:
            return None
        if cap_mem > 0 and cap_cpu > 0:
            share = (free_mem / cap_mem + free_cpu / cap_cpu) / 2
        elif cap_mem > 0:
            share = free_mem / cap_mem
        elif cap_cpu > 0:
            share = free_cpu / cap_cpu
        else:
            share = 0.0
        return (mine_on_node[node_id], -cached[node_id], sign * share, node_id)

    zone_heaps: dict[str | None, list[_NodeKey]] = defaultdict(list)
    for node in nodes:
        if node.id in excluded or not node.schedulable or not matches(deployment, node):
            continue
        if publishes and not ledger.ports_free(node.id, deployment.host_ports):
            continue
        capacity, reserved = node.capacity, node.reserved
        used = ledger.used.get(node.id, _NOTHING)
        free_before[node.id] = (
            capacity.memory_mib - reserved.memory_mib - used.memory_mib,
            capacity.vcpus - reserved.vcpus - used.vcpus,
            capacity.memory_mib,
            capacity.vcpus,
        )
        cached[node.id] = sum(size for digest, size in layers if digest in node.cached_layers)
        zone = zone_of[node.id] = node.labels.get(spread_by) if spread_by is not None else ""
        key = key_of(node.id)
        if key is not None:
            current[node.id] = key
            zone_heaps[zone].append(key)
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
        taken[node_id] += 1
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
