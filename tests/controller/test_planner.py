"""The reconciler's planner: each rule by example, then convergence and safety by property."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

from fleet_cases import (
    PENDING,
    RUNNING,
    apply,
    deployment,
    deployments,
    ids,
    node,
    nodes,
    replica,
    replicas_of,
    start_all,
    used_on,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ukedge.controller import (
    DeploymentView,
    NodeView,
    Plan,
    ReplicaState,
    ReplicaView,
    ScoringStrategy,
    plan,
)

NOW = 100.0
GRACE = 20.0
BOUNDED = settings(max_examples=100, deadline=None)


def run(
    deployments_: Sequence[DeploymentView],
    fleet: Sequence[NodeView],
    replicas: Sequence[ReplicaView],
    *,
    now: float = NOW,
    strategy: ScoringStrategy = "least-allocated",
) -> Plan:
    return plan(
        deployments_, fleet, replicas, now=now, grace_s=GRACE, strategy=strategy, new_id=ids()
    )


def empty(result: Plan) -> bool:
    return not result.add and not result.remove and not result.rollbacks


def settle(
    deployments_: Sequence[DeploymentView],
    fleet: Sequence[NodeView],
    replicas: Sequence[ReplicaView],
    *,
    passes: int = 20,
) -> tuple[list[ReplicaView], list[Plan]]:
    """Plan, apply, let every node start what it was given; until a pass changes nothing."""
    state = list(replicas)
    plans: list[Plan] = []
    counter = ids("s")
    for _ in range(passes):
        result = plan(deployments_, fleet, state, now=NOW, grace_s=GRACE, new_id=counter)
        plans.append(result)
        if empty(result):
            return state, plans
        state = start_all(apply(state, result))
    raise AssertionError(f"no fixpoint after {passes} passes: {plans[-1]}")


def test_a_new_deployment_gets_its_replicas_and_a_second_pass_does_nothing() -> None:
    fleet = [node("n1"), node("n2"), node("n3")]
    web = deployment(replicas=3)
    first = run([web], fleet, [])
    assert sorted(r.node_id or "" for r in first.add) == ["n1", "n2", "n3"]
    assert all(r.state is PENDING and r.revision == 1 for r in first.add)
    assert [r.replica for r in first.add] == ["new1", "new2", "new3"]
    assert len(first.events) == 3 and "placing new1 on n1" in first.events[0]
    assert empty(run([web], fleet, apply([], first)))


def test_no_room_is_an_event_not_a_placement() -> None:
    huge = deployment(memory_mib=1 << 20)
    result = run([huge], [node("n1")], [])
    assert result.add == []
    assert "no node fits 1 more replica" in result.events[0]


def lost_fleet(**n2: object) -> tuple[list[NodeView], DeploymentView, list[ReplicaView]]:
    fleet = [node("n1"), node("n2", **n2), node("n3")]
    web = deployment(replicas=2)
    return fleet, web, [replica(web, "r1", "n1"), replica(web, "r2", "n2", assigned_at=1.0)]


def test_a_replica_of_a_node_gone_quiet_is_replaced_after_the_grace_period() -> None:
    # NotReady but seen 15 s ago: within the 20 s grace, nothing moves.
    fleet, web, replicas = lost_fleet(ready=False, last_seen=NOW - 15)
    assert empty(run([web], fleet, replicas))
    # 21 s: replaced on n3, the lost replica is kept (its node may come back with it running).
    fleet, web, replicas = lost_fleet(ready=False, last_seen=NOW - 21)
    result = run([web], fleet, replicas)
    assert [(r.node_id, r.replica) for r in result.add] == [("n3", "new1")]
    assert result.remove == []
    assert result.events == [
        "deployment web: replica r2 on node n2 lost (NotReady for 21 s); placing new1 on n3"
    ]
    # Applied: the next pass leaves it alone.
    assert empty(run([web], fleet, apply(replicas, result)))


def test_autonomy_keeps_a_quiet_nodes_replicas_in_place_for_its_duration() -> None:
    fleet, web, replicas = lost_fleet(ready=False, last_seen=NOW - 120)
    patient = dataclasses.replace(web, autonomy_s=600.0)
    assert empty(run([patient], fleet, replicas))
    assert len(run([patient], fleet, replicas, now=NOW + 480).add) == 1


def test_when_the_node_returns_the_replacement_goes_not_the_replica_that_kept_running() -> None:
    fleet, web, replicas = lost_fleet(ready=False, last_seen=NOW - 30)
    replaced = apply(replicas, run([web], fleet, replicas))
    back = [node("n1"), node("n2"), node("n3")]
    # The replacement is still pending: it goes, whatever the ids or times.
    result = run([web], back, replaced)
    assert [r.replica for r in result.remove] == ["new1"]
    assert result.add == []
    # Both running: the newest (the replacement) goes, never the one that kept running.
    result = run([web], back, start_all(replaced))
    assert [r.replica for r in result.remove] == ["new1"]
    assert empty(run([web], back, apply(start_all(replaced), result)))


def test_failed_replicas_are_removed_and_replaced() -> None:
    fleet = [node("n1"), node("n2")]
    web = deployment(replicas=2)
    replicas = [replica(web, "r1", "n1"), replica(web, "r2", "n2", ReplicaState.FAILED)]
    result = run([web], fleet, replicas)
    assert [r.replica for r in result.remove] == ["r2"]
    assert [r.node_id for r in result.add] == ["n2"]  # its resources are free again
    assert result.events[0] == "deployment web: replica r2 on node n2 failed; removing it"


def test_completed_replicas_are_kept_not_replaced() -> None:
    """A replica that ended with status 0 under a policy that does not restart it has done its
    job: running it again elsewhere, under a new id, every pass, would be a loop."""
    fleet = [node("n1"), node("n2")]
    web = deployment(replicas=2)
    done = [replica(web, "r1", "n1", ReplicaState.COMPLETED), replica(web, "r2", "n2")]
    assert empty(run([web], fleet, done))
    # Its node lost: still done, nothing to replace.
    quiet = [node("n1", ready=False, last_seen=NOW - 600), node("n2")]
    assert empty(run([web], quiet, done))
    # A new revision runs again; a draining node gives its completed replica up.
    result = run([dataclasses.replace(web, revision=2)], fleet, done)
    assert "r1" in [r.replica for r in result.remove]
    result = run([web], [node("n1", draining=True), node("n2")], done)
    assert [r.replica for r in result.remove] == ["r1"]
    assert [r.node_id for r in result.add] == ["n2"]


def test_a_rollout_whose_new_replicas_complete_removes_the_old_ones() -> None:
    """A job's new revision ran and finished: its completed replicas are the rollout's result,
    so the old revision's running replicas go (they were kept beside them forever)."""
    fleet = [node(f"n{i}") for i in range(4)]
    v1 = deployment(replicas=2)
    v2 = deployment(replicas=2, revision=2, previous_revision=1, max_surge=1, max_unavailable=0)
    state = [
        replica(v1, "r1", "n0"),
        replica(v1, "r2", "n1"),
        replica(v2, "j1", "n2", ReplicaState.COMPLETED, revision=2),
        replica(v2, "j2", "n3", ReplicaState.COMPLETED, revision=2),
    ]
    result = run([v2], fleet, state)
    assert sorted(r.replica for r in result.remove) == ["r1", "r2"] and result.add == []
    assert empty(run([v2], fleet, apply(state, result)))
    # One new replica still starting: one old one goes, and 2 stay available (one running,
    # one completed) as max_unavailable=0 asks.
    state[3] = replica(v2, "j2", "n3", ReplicaState.STARTING, revision=2)
    assert len(run([v2], fleet, state).remove) == 1


def test_a_per_node_rollout_drops_the_old_replica_beside_a_completed_new_one() -> None:
    fleet = [node("n0"), node("n1")]
    v2 = deployment("agent", mode="per-node", revision=2, previous_revision=1, max_surge=1)
    state = [
        replica(v2, "a0", "n0", revision=1),
        replica(v2, "b0", "n0", ReplicaState.COMPLETED, revision=2),
        replica(v2, "a1", "n1", revision=1),
    ]
    result = run([v2], fleet, state)
    assert [r.replica for r in result.remove] == ["a0"]
    # n1's old replica is replaced by surging beside it: n0 no longer holds an unavailable one.
    assert [(r.node_id, r.revision) for r in result.add] == [("n1", 2)]


def test_a_completed_replica_gives_back_nothing_when_a_new_revision_replaces_it() -> None:
    """Its machine is gone, so it holds nothing: replacing it on a full node must not count
    its resources as freed (hypothesis found this over-commit)."""
    full = node("n1", memory_mib=256)
    other = deployment("other", memory_mib=256)
    api = deployment("api", mode="per-node", revision=2, memory_mib=64)
    replicas = [
        replica(other, "o1", "n1"),
        replica(api, "a1", "n1", ReplicaState.COMPLETED, revision=1),
    ]
    result = run([other, api], [full], replicas)
    assert result.add == []
    assert used_on("n1", apply(replicas, result)).fits_in(full.capacity - full.reserved)


def test_replicas_on_removed_nodes_and_of_deleted_deployments_go() -> None:
    web = deployment(replicas=1)
    gone = deployment("gone")
    replicas = [replica(web, "r1", "n9"), replica(gone, "g1", "n1")]
    result = run([web], [node("n1")], replicas)
    assert sorted(r.replica for r in result.remove) == ["g1", "r1"]
    assert [r.node_id for r in result.add] == ["n1"]


def test_draining_is_make_before_break() -> None:
    fleet = [node("n1", draining=True), node("n2"), node("n3")]
    web = deployment(replicas=2)
    replicas = [
        replica(web, "r1", "n1"),
        replica(web, "r2", "n1", ReplicaState.STARTING),
        replica(web, "r3", "n2"),
    ]
    first = run([web], fleet, replicas)
    # The one not running goes at once; the running one stays until its replacement runs.
    assert [r.replica for r in first.remove] == ["r2"]
    assert [r.node_id for r in first.add] == ["n3"]
    after = apply(replicas, first)
    assert empty(run([web], fleet, after))
    second = run([web], fleet, start_all(after))
    assert [r.replica for r in second.remove] == ["r1"]
    assert second.add == []


def test_draining_counts_only_running_replicas_of_the_current_revision() -> None:
    fleet = [node("n1", draining=True), node("n2"), node("n3")]
    web = deployment(replicas=2, revision=2, previous_revision=1)
    replicas = [
        replica(web, "r1", "n1"),
        replica(web, "r2", "n2"),
        replica(web, "old", "n3", revision=1),
    ]
    # Three run, but only one of revision 2 besides r1: r1 stays until its replacement runs.
    result = run([web], fleet, replicas)
    assert "r1" not in {r.replica for r in result.remove}
    assert [r.node_id for r in result.add] == ["n3"]


def test_cordoned_nodes_keep_their_replicas_and_get_no_new_ones() -> None:
    fleet = [node("n1", cordoned=True), node("n2")]
    web = deployment(replicas=3)
    replicas = [replica(web, "r1", "n1")]
    result = run([web], fleet, replicas)
    assert result.remove == []
    assert [r.node_id for r in result.add] == ["n2", "n2"]


def test_scale_down_removes_not_running_first_then_the_newest() -> None:
    fleet = [node("n1"), node("n2")]
    web = deployment(replicas=5)
    replicas = [
        replica(web, "a", "n1", assigned_at=1),
        replica(web, "b", "n1", assigned_at=5),
        replica(web, "c", "n2", PENDING, assigned_at=2),
        replica(web, "d", "n2", assigned_at=3),
        replica(web, "e", "n2", ReplicaState.UNHEALTHY, assigned_at=4),
    ]
    result = run([dataclasses.replace(web, replicas=2)], fleet, replicas)
    assert [r.replica for r in result.remove] == ["e", "c", "b"]


def rollout_steps(
    web: DeploymentView, count: int, new_end: ReplicaState = ReplicaState.RUNNING
) -> None:
    """Roll ``count`` replicas from revision 1 to ``web``'s, checking the bounds each pass;
    the new revision's replicas, once started, are ``new_end`` (COMPLETED: a job)."""
    fleet = [node(f"n{i}") for i in range(count + 2)]
    v1 = dataclasses.replace(web, revision=1, previous_revision=None)
    state, _ = settle([v1], fleet, [])
    for r in state:
        assert r.revision == 1 and r.state is RUNNING
    counter = ids("v2-")
    done = (ReplicaState.RUNNING, ReplicaState.COMPLETED)
    for _ in range(4 * count + 4):
        result = plan([web], fleet, state, now=NOW, grace_s=GRACE, new_id=counter)
        assert not result.rollbacks
        if empty(result):
            break
        state = apply(state, result)
        available = sum(1 for r in state if r.state in done)
        assert available >= web.replicas - web.max_unavailable, result.events
        assert len(state) <= web.replicas + web.max_surge, result.events
        state = [
            dataclasses.replace(r, state=new_end) if r.revision == web.revision else r
            for r in start_all(state)
        ]
    assert [r.revision for r in state] == [web.revision] * web.replicas


def test_rolling_update_with_surge() -> None:
    rollout_steps(deployment(replicas=4, revision=2, previous_revision=1, max_surge=1), 4)


def test_rolling_update_with_unavailability_and_no_surge() -> None:
    web = deployment(replicas=4, revision=2, previous_revision=1, max_surge=0, max_unavailable=2)
    rollout_steps(web, 4)


def test_rolling_update_starts_with_at_most_max_surge_new_replicas() -> None:
    fleet = [node(f"n{i}") for i in range(6)]
    v1 = deployment(replicas=3)
    replicas = [replica(v1, f"r{i}", f"n{i}") for i in range(3)]
    v2 = deployment(replicas=3, revision=2, previous_revision=1, max_surge=2)
    result = run([v2], fleet, replicas)
    assert len(result.add) == 2 and result.remove == []
    assert all(r.revision == 2 for r in result.add)
    assert "rolling out revision 2" in result.events[0]


def failing_rollout(state: ReplicaState, assigned_at: float) -> Plan:
    fleet = [node(f"n{i}") for i in range(4)]
    v2 = deployment(replicas=2, revision=2, previous_revision=1)
    replicas = [
        replica(v2, "r1", "n0", revision=1),
        replica(v2, "r2", "n1", revision=1),
        replica(v2, "r3", "n2", state, assigned_at=assigned_at),
    ]
    return run([v2], fleet, replicas)


def test_a_failed_new_replica_rolls_the_deployment_back_and_nothing_else() -> None:
    result = failing_rollout(ReplicaState.FAILED, NOW - 1)
    assert result.rollbacks == {"web": 1}
    assert result.add == [] and result.remove == []
    assert result.events == [
        "deployment web: replica r3 of revision 2 failed; rolling back to revision 1"
    ]


def test_an_unhealthy_new_replica_rolls_back_only_after_the_start_up_grace() -> None:
    assert not failing_rollout(ReplicaState.UNHEALTHY, NOW - 5).rollbacks
    result = failing_rollout(ReplicaState.UNHEALTHY, NOW - 30)
    assert result.rollbacks == {"web": 1}
    assert "unhealthy 30 s after start" in result.events[0]


def test_a_failure_after_the_rollout_is_only_replaced() -> None:
    fleet = [node("n1"), node("n2")]
    v2 = deployment(replicas=2, revision=2, previous_revision=1)
    replicas = [replica(v2, "r1", "n1"), replica(v2, "r2", "n2", ReplicaState.FAILED)]
    result = run([v2], fleet, replicas)
    assert not result.rollbacks
    assert [r.replica for r in result.remove] == ["r2"] and len(result.add) == 1


def test_per_node_runs_one_replica_on_every_matching_node() -> None:
    agent = deployment("agent", mode="per-node", selector={"role": "edge"})
    fleet = [
        node("n1", labels={"role": "edge"}),
        node("n2", labels={"role": "edge"}, cordoned=True),
        node("n3", labels={"role": "core"}),
        node("n4", labels={"role": "edge"}, ready=False),
    ]
    result = run([agent], fleet, [])
    assert [r.node_id for r in result.add] == ["n1"]
    state = apply([], result)
    assert empty(run([agent], fleet, state))
    # A node that joins later gets one; one whose label changed loses its replica.
    joined = [*fleet, node("n5", labels={"role": "edge"})]
    assert [r.node_id for r in run([agent], joined, state).add] == ["n5"]
    relabelled = [node("n1", labels={"role": "core"}), *fleet[1:]]
    result = run([agent], relabelled, state)
    assert [r.node_id for r in result.remove] == ["n1"] and result.add == []
    assert "no longer matches" in result.events[0]


def test_per_node_keeps_cordoned_replicas_and_drops_draining_and_duplicates() -> None:
    agent = deployment("agent", mode="per-node")
    fleet = [node("n1", cordoned=True), node("n2", draining=True), node("n3")]
    replicas = [
        replica(agent, "a1", "n1"),
        replica(agent, "a2", "n2"),
        replica(agent, "a3", "n3", assigned_at=1),
        replica(agent, "a4", "n3", PENDING, assigned_at=0),
    ]
    result = run([agent], fleet, replicas)
    assert sorted(r.replica for r in result.remove) == ["a2", "a4"]
    assert result.add == []


def test_per_node_rolling_update_moves_node_by_node() -> None:
    fleet = [node(f"n{i}") for i in range(4)]
    v1 = deployment("agent", mode="per-node")
    state = [replica(v1, f"a{i}", f"n{i}") for i in range(4)]
    v2 = dataclasses.replace(v1, revision=2, previous_revision=1, max_surge=1)
    first = run([v2], fleet, state)
    assert [(r.node_id, r.revision) for r in first.add] == [("n0", 2)] and first.remove == []
    state = start_all(apply(state, first))
    second = run([v2], fleet, state)
    assert [r.node_id for r in second.remove] == ["n0"]
    assert [r.node_id for r in second.add] == ["n1"]
    final, _ = settle([v2], fleet, state)
    assert sorted((r.node_id, r.revision) for r in final) == [(f"n{i}", 2) for i in range(4)]


def test_a_published_port_places_one_replica_a_node() -> None:
    web = deployment(replicas=3, host_ports=frozenset({"tcp/8080"}))
    placed = run([web], [node("n0"), node("n1")], [])
    assert sorted(r.node_id for r in placed.add) == ["n0", "n1"]


def test_per_node_update_of_a_published_port_replaces_in_place_or_says_why_it_waits() -> None:
    fleet = [node("n0"), node("n1")]
    v1 = deployment("agent", mode="per-node", host_ports=frozenset({"tcp/8080"}))
    state = [replica(v1, f"a{i}", f"n{i}") for i in range(2)]
    v2 = dataclasses.replace(v1, revision=2, previous_revision=1, max_surge=1)
    waiting = run([v2], fleet, state)
    assert waiting.add == [] and waiting.remove == []
    assert any("max_unavailable" in event for event in waiting.events), waiting.events
    in_place = dataclasses.replace(v2, max_unavailable=1)
    first = run([in_place], fleet, state)
    assert [(r.node_id, r.revision) for r in first.add] == [("n0", 2)]
    assert [r.node_id for r in first.remove] == ["n0"]
    final, _ = settle([in_place], fleet, state)
    assert sorted((r.node_id, r.revision) for r in final) == [("n0", 2), ("n1", 2)]


# --- properties --------------------------------------------------------------------------------


@st.composite
def fleets(
    draw: st.DrawFn,
) -> tuple[list[DeploymentView], list[NodeView], list[ReplicaView]]:
    fleet = draw(nodes(max_size=8))
    apps = [draw(deployments(name="api")), draw(deployments(name="web"))]
    replicas = draw(replicas_of(apps[0], fleet)) + draw(replicas_of(apps[1], fleet))
    return apps, fleet, replicas


@BOUNDED
@given(case=fleets(), strategy=st.sampled_from(["least-allocated", "bin-pack"]))
def test_property_a_second_pass_over_an_unchanged_fleet_does_nothing(
    case: tuple[list[DeploymentView], list[NodeView], list[ReplicaView]],
    strategy: ScoringStrategy,
) -> None:
    apps, fleet, replicas = case
    counter = ids()
    first = plan(apps, fleet, replicas, now=NOW, grace_s=GRACE, strategy=strategy, new_id=counter)
    if first.rollbacks:
        return  # the store changes the deployment first; the next pass sees another input
    second = plan(
        apps,
        fleet,
        apply(replicas, first),
        now=NOW,
        grace_s=GRACE,
        strategy=strategy,
        new_id=counter,
    )
    assert second.add == [] and second.remove == [], second.events
    # Same input, same plan.
    again = plan(apps, fleet, replicas, now=NOW, grace_s=GRACE, strategy=strategy, new_id=ids())
    assert again == first


@BOUNDED
@given(case=fleets())
def test_property_running_replicas_are_kept_while_a_deployment_is_short(
    case: tuple[list[DeploymentView], list[NodeView], list[ReplicaView]],
) -> None:
    apps, fleet, replicas = case
    result = plan(apps, fleet, replicas, now=NOW, grace_s=GRACE, new_id=ids())
    by_id = {n.id: n for n in fleet}
    after = apply(replicas, result)
    for app in apps:
        if app.mode != "replicated":
            continue
        for removed in result.remove:
            node_ = by_id.get(removed.node_id or "")
            if (
                removed.deployment != app.name
                or removed.state is not RUNNING
                or removed.revision != app.revision
                or node_ is None  # its node is gone: it cannot stay
            ):
                continue
            running = sum(
                1
                for r in after
                if r.deployment == app.name and r.revision == app.revision and r.state is RUNNING
            )
            assert running >= app.replicas, result.events


@BOUNDED
@given(case=fleets())
def test_property_placements_never_over_commit_a_node(
    case: tuple[list[DeploymentView], list[NodeView], list[ReplicaView]],
) -> None:
    apps, fleet, replicas = case
    result = plan(apps, fleet, replicas, now=NOW, grace_s=GRACE, new_id=ids())
    after = apply(replicas, result)
    by_id = {n.id: n for n in fleet}
    for added in result.add:
        target = by_id[added.node_id or ""]
        assert target.ready
        assert used_on(target.id, after).fits_in(target.capacity - target.reserved)


@BOUNDED
@given(case=fleets())
def test_property_nodes_starting_what_they_are_given_reach_a_fixpoint(
    case: tuple[list[DeploymentView], list[NodeView], list[ReplicaView]],
) -> None:
    apps, fleet, replicas = case
    state = list(replicas)
    counter = ids("s")
    for _ in range(40):
        result = plan(apps, fleet, state, now=NOW, grace_s=GRACE, new_id=counter)
        if result.rollbacks:
            return  # the store changes a deployment: another input
        if not result.add and not result.remove:
            break
        state = start_all(apply(state, result))
    else:
        raise AssertionError(f"no fixpoint after 40 passes: {result.events}")
    # No surplus is left, but for lost replicas (they wait for their node to return) and
    # replicas on draining nodes (they wait until their replacements run).
    ready = {n.id for n in fleet if n.ready and not n.draining}
    for app in apps:
        if app.mode == "replicated":
            current = [
                r
                for r in state
                if r.deployment == app.name and r.revision == app.revision and r.node_id in ready
            ]
            assert len(current) <= app.replicas, result.events


@BOUNDED
@given(
    replicas=st.integers(0, 6),
    max_surge=st.integers(0, 2),
    max_unavailable=st.integers(0, 2),
    new_end=st.sampled_from([ReplicaState.RUNNING, ReplicaState.COMPLETED]),
)
def test_property_a_rolling_update_stays_within_its_bounds_and_completes(
    replicas: int, max_surge: int, max_unavailable: int, new_end: ReplicaState
) -> None:
    """Also when the new revision's replicas complete (a job): they count as available."""
    if max_surge == max_unavailable == 0:
        max_unavailable = 1  # the spec refuses both 0
    web = deployment(
        replicas=replicas,
        revision=2,
        previous_revision=1,
        max_surge=max_surge,
        max_unavailable=max_unavailable,
    )
    rollout_steps(web, replicas, new_end)


@BOUNDED
@given(
    size=st.integers(1, 6),
    max_surge=st.integers(0, 2),
    max_unavailable=st.integers(0, 2),
    tight=st.booleans(),
)
def test_property_a_per_node_rolling_update_stays_within_its_bounds_and_completes(
    size: int, max_surge: int, max_unavailable: int, tight: bool
) -> None:
    if max_surge == max_unavailable == 0:
        max_surge = 1
    # ``tight``: a node has room for one replica only, so surging there is impossible.
    fleet = [node(f"n{i}", memory_mib=256 if tight else 4096) for i in range(size)]
    v1 = deployment("agent", mode="per-node")
    state, _ = settle([v1], fleet, [])
    v2 = dataclasses.replace(
        v1,
        revision=2,
        previous_revision=1,
        max_surge=max_surge,
        max_unavailable=max_unavailable,
    )
    counter = ids("v2-")
    for _ in range(4 * size + 4):
        result = plan([v2], fleet, state, now=NOW, grace_s=GRACE, new_id=counter)
        if empty(result):
            break
        state = apply(state, result)
        per_node = Counter(r.node_id for r in state)
        running = {r.node_id for r in state if r.state is RUNNING}
        assert size - len(running) <= max_unavailable, result.events
        assert sum(1 for many in per_node.values() if many > 1) <= max_surge, result.events
        state = start_all(state)
    if tight and max_unavailable == 0:
        # No room to surge and no unavailability allowed: the rollout cannot move, and waits.
        assert all(r.revision == 1 for r in state)
    else:
        assert sorted((r.node_id, r.revision) for r in state) == [(f"n{i}", 2) for i in range(size)]
