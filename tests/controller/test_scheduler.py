"""The scheduler: filters, scores, batches that never over-commit, determinism (by example and
by property)."""

from __future__ import annotations

import random
from collections import Counter

from fleet_cases import deployment, deployments, node, nodes, replica, replicas_of, used_on
from hypothesis import given, settings
from hypothesis import strategies as st

from ukedge.controller import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    Resources,
    ScoringStrategy,
    per_node_targets,
    schedule,
)
from ukedge.controller._scheduler import matches

BOUNDED = settings(max_examples=100, deadline=None)
strategies = st.sampled_from(["least-allocated", "bin-pack"])


def test_no_replicas_asked_for_none_placed() -> None:
    assert schedule(deployment(), 0, [node("n1")], []) == []


def test_only_ready_uncordoned_undrained_unexcluded_nodes_are_used() -> None:
    fleet = [
        node("a", ready=False),
        node("b", cordoned=True),
        node("c", draining=True),
        node("d"),
        node("e"),
    ]
    assert schedule(deployment(), 1, fleet, [], exclude={"d"}) == ["e"]
    assert schedule(deployment(), 1, fleet[:3], []) == [None]


def test_architecture_and_selector_filter() -> None:
    fleet = [
        node("a", architecture="aarch64", labels={"gpu": "yes"}),
        node("b", labels={"gpu": "no"}),
        node("c", labels={"gpu": "yes", "site": "x"}),
    ]
    picky = deployment(architectures=frozenset({"x86_64"}), selector={"gpu": "yes"})
    assert schedule(picky, 2, fleet, []) == ["c", "c"]
    assert per_node_targets(picky, fleet) == ["c"]
    anywhere = deployment()
    assert per_node_targets(anywhere, fleet) == ["a", "b", "c"]


def test_architectures_accept_oci_and_machine_names_alike() -> None:
    fleet = [
        node("x", architecture="x86_64"),
        node("a", architecture="aarch64"),
        node("p", architecture="linux/arm64/v8"),  # a node that reports an OCI platform
        node("u", architecture="riscv64"),  # nothing ukedge runs: matches no named arch
    ]
    for names in ({"arm64"}, {"aarch64"}, {"linux/arm64"}, {"linux/arm64/v8"}):
        picky = deployment(architectures=frozenset(names))
        assert per_node_targets(picky, fleet) == ["a", "p"], names
    for names in ({"amd64"}, {"x86_64"}, {"linux/amd64"}):
        assert per_node_targets(deployment(architectures=frozenset(names)), fleet) == ["x"]
    assert per_node_targets(deployment(), fleet) == ["a", "p", "u", "x"]


def test_image_platforms_filter_and_a_multi_platform_image_spreads_over_both() -> None:
    fleet = [
        node("x1", architecture="x86_64"),
        node("x2", architecture="x86_64"),
        node("a1", architecture="aarch64"),
    ]
    amd_only = deployment(platforms=frozenset({"linux/amd64"}))
    assert sorted(n for n in schedule(amd_only, 3, fleet, []) if n) == ["x1", "x1", "x2"]
    assert per_node_targets(amd_only, fleet) == ["x1", "x2"]
    arm_only = deployment(platforms=frozenset({"linux/arm64/v8"}))
    assert schedule(arm_only, 2, fleet, []) == ["a1", "a1"]
    both = deployment(platforms=frozenset({"linux/amd64", "linux/arm64/v8"}))
    assert sorted(n for n in schedule(both, 3, fleet, []) if n) == ["a1", "x1", "x2"]
    # Architectures and platforms both hold: arm64 nodes only, and the image has arm64.
    narrowed = deployment(
        platforms=frozenset({"linux/amd64", "linux/arm64"}), architectures=frozenset({"arm64"})
    )
    assert per_node_targets(narrowed, fleet) == ["a1"]
    # An image without the node's platform has nowhere to go.
    assert schedule(amd_only, 1, [fleet[2]], []) == [None]


def test_a_batch_never_over_commits_and_says_none_when_full() -> None:
    # 1024 MiB, 128 reserved, 256 held by another deployment: room for two of 256 MiB.
    other = deployment("db", memory_mib=256)
    fleet = [node("a", memory_mib=1024, reserved=Resources(128, 0))]
    placed = schedule(deployment(), 4, fleet, [replica(other, "d1", "a")])
    assert placed == ["a", "a", None, None]
    fleet = [node("a", memory_mib=1024, vcpus=2)]
    assert schedule(deployment(), 3, fleet, []) == ["a", "a", None]


def test_failed_replicas_hold_nothing_lost_ones_still_do() -> None:
    other = deployment("db", memory_mib=512)
    fleet = [node("a", memory_mib=512)]
    failed = replica(other, "d1", "a", ReplicaState.FAILED)
    lost = replica(other, "d1", "a", ReplicaState.LOST)
    assert schedule(deployment(), 1, fleet, [failed]) == ["a"]
    assert schedule(deployment(), 1, fleet, [lost]) == [None]


def test_cached_layers_win_over_load() -> None:
    app = deployment(layers={"big": 50_000_000, "small": 10})
    fleet = [node("a"), node("b", cached={"small"}), node("c", cached={"big"})]
    busy = deployment("db", memory_mib=2048)
    # c is the busiest node, but it has the big layer already.
    assert schedule(app, 1, fleet, [replica(busy, "d1", "c")]) == ["c"]


def test_least_allocated_spreads_load_bin_pack_fills() -> None:
    other = deployment("db", memory_mib=2048, vcpus=2)
    fleet = [node("a"), node("b"), node("c")]
    existing = [replica(other, "d1", "b")]
    assert schedule(deployment(), 1, fleet, existing, strategy="least-allocated") == ["a"]
    assert schedule(deployment(), 1, fleet, existing, strategy="bin-pack") == ["b"]


def test_replicas_of_one_deployment_share_a_node_only_when_they_must() -> None:
    fleet = [node("a"), node("b"), node("c")]
    both: tuple[ScoringStrategy, ...] = ("least-allocated", "bin-pack")
    for strategy in both:
        placed = schedule(deployment(), 6, fleet, [], strategy=strategy)
        assert Counter(placed) == {"a": 2, "b": 2, "c": 2}


def test_spread_over_zones_before_nodes() -> None:
    fleet = [node("a1", zone="a"), node("a2", zone="a"), node("a3", zone="a"), node("b1", zone="b")]
    app = deployment(spread_by="zone")
    placed = schedule(app, 4, fleet, [])
    assert Counter(f[0] for f in placed if f) == {"a": 2, "b": 2}
    # One already runs in zone a: the next goes to b.
    assert schedule(app, 1, fleet, [replica(app, "r1", "a1")]) == ["b1"]
    # Replicas of another revision do not count (they are on their way out).
    old = replica(app, "r1", "b1", revision=0)
    assert schedule(app, 2, fleet, [old]) == ["a1", "b1"]


def test_a_zone_counts_only_replicas_on_ready_nodes() -> None:
    # Zone a lost node x1 and its replica; zone b still runs one: the replacement goes to a.
    fleet = [
        node("a1", zone="b"),
        node("a2", zone="b"),
        node("x1", zone="a", ready=False),
        node("x2", zone="a"),
    ]
    app = deployment(spread_by="zone")
    lost = replica(app, "r1", "x1", ReplicaState.LOST)
    assert schedule(app, 1, fleet, [lost, replica(app, "r2", "a1")]) == ["x2"]


def test_nodes_without_the_spread_label_only_when_labelled_ones_are_full() -> None:
    fleet = [node("x"), node("y", zone="a", memory_mib=512, vcpus=2)]
    app = deployment(spread_by="zone")
    assert schedule(app, 3, fleet, []) == ["y", "y", "x"]


def test_same_input_same_output_in_any_node_order() -> None:
    fleet = [node(f"n{i}", zone="ab"[i % 2]) for i in range(8)]
    app = deployment(spread_by="zone", replicas=5)
    first = schedule(app, 5, fleet, [])
    shuffled = list(fleet)
    random.Random(7).shuffle(shuffled)
    assert schedule(app, 5, shuffled, []) == first


# --- properties --------------------------------------------------------------------------------


@st.composite
def cases(draw: st.DrawFn) -> tuple[DeploymentView, list[NodeView], list[ReplicaView], int]:
    fleet = draw(nodes())
    app = draw(deployments())
    other = draw(deployments(name="other"))
    existing = draw(replicas_of(app, fleet)) + draw(replicas_of(other, fleet))
    return app, fleet, existing, draw(st.integers(0, 20))


@BOUNDED
@given(case=cases(), strategy=strategies, exclude=st.sets(st.sampled_from(["n00", "n01"])))
def test_property_filters_hold_and_no_node_is_over_committed(
    case: tuple[DeploymentView, list[NodeView], list[ReplicaView], int],
    strategy: ScoringStrategy,
    exclude: set[str],
) -> None:
    app, fleet, existing, count = case
    placed = schedule(app, count, fleet, existing, strategy=strategy, exclude=exclude)
    assert len(placed) == count
    by_id = {n.id: n for n in fleet}
    after = existing + [
        replica(app, f"new{i}", node_id, ReplicaState.PENDING)
        for i, node_id in enumerate(placed)
        if node_id is not None
    ]
    for node_id in {p for p in placed if p is not None}:
        chosen = by_id[node_id]
        assert chosen.schedulable and matches(app, chosen) and node_id not in exclude
        assert used_on(node_id, after).fits_in(chosen.capacity - chosen.reserved)
    if None in placed:
        # Once nothing fits, nothing fits for the rest; and truly no candidate had room.
        first = placed.index(None)
        assert set(placed[first:]) == {None}
        for candidate in fleet:
            if candidate.schedulable and matches(app, candidate) and candidate.id not in exclude:
                free = candidate.capacity - candidate.reserved - used_on(candidate.id, after)
                assert not app.resources.fits_in(free)


@BOUNDED
@given(case=cases(), strategy=strategies, seed=st.integers(0, 1000))
def test_property_same_input_same_output(
    case: tuple[DeploymentView, list[NodeView], list[ReplicaView], int],
    strategy: ScoringStrategy,
    seed: int,
) -> None:
    app, fleet, existing, count = case
    first = schedule(app, count, fleet, existing, strategy=strategy)
    rng = random.Random(seed)
    fleet2, existing2 = list(fleet), list(existing)
    rng.shuffle(fleet2)
    rng.shuffle(existing2)
    assert schedule(app, count, fleet2, existing2, strategy=strategy) == first


@BOUNDED
@given(
    zones=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    count=st.integers(0, 30),
    strategy=strategies,
    load=st.lists(st.integers(0, 3), max_size=16),
)
def test_property_zones_never_differ_by_more_than_one_when_room_allows(
    zones: list[int], count: int, strategy: ScoringStrategy, load: list[int]
) -> None:
    # Every node could take the whole batch on its own, so capacity never stands in the way;
    # other deployments' replicas load some nodes unevenly to tempt the resource score.
    fleet = [
        node(f"{zone}-{index}", zone=str(zone), memory_mib=64 * 128, vcpus=128)
        for zone, size in enumerate(zones)
        for index in range(size)
    ]
    other = deployment("other", memory_mib=64, vcpus=1)
    existing = [
        replica(other, f"o{i}-{j}", fleet[i % len(fleet)].id)
        for i, many in enumerate(load)
        for j in range(many)
    ]
    app = deployment(spread_by="zone", memory_mib=64, vcpus=1)
    placed = schedule(app, count, fleet, existing, strategy=strategy)
    assert None not in placed
    per_zone = Counter(node_id.split("-")[0] for node_id in placed if node_id)
    counts = [per_zone.get(str(zone), 0) for zone in range(len(zones))]
    assert max(counts) - min(counts) <= 1


def test_a_published_host_port_allows_one_replica_a_node_and_none_beside_its_holder() -> None:
    web = deployment(host_ports=frozenset({"tcp/8080"}))
    placed = schedule(web, 3, [node("n1"), node("n2")], [])
    assert sorted(p for p in placed if p) == ["n1", "n2"] and placed.count(None) == 1
    holder = deployment("api", host_ports=frozenset({"tcp/8080"}))
    assert schedule(web, 1, [node("n1"), node("n2")], [replica(holder, "a1", "n1")]) == ["n2"]
    other_port = deployment("api", host_ports=frozenset({"tcp/9090"}))
    assert schedule(web, 1, [node("n1")], [replica(other_port, "b1", "n1")]) == ["n1"]
    gone = replica(holder, "a2", "n1", ReplicaState.FAILED)  # a failed replica holds nothing
    assert schedule(web, 1, [node("n1")], [gone]) == ["n1"]
