"""The controller's move state machine (pure): offer, moving, done or failed; one holder."""

from __future__ import annotations

import pytest

from ukedge.controller._moves import (
    MAX_ATTEMPTS,
    OFFER_TIMEOUT_S,
    Move,
    MoveState,
    after_failure,
    cancel,
    cancels,
    expire,
    holder,
    offer_requests,
    on_offer,
    on_report,
    orders,
    start,
)
from ukedge.host.link import MoveOffer, MoveReport

OFFER = {"node": "b", "host": "10.0.0.2", "port": 7611, "ticket": "t" * 32}


def _move(now: float = 100.0, attempt: int = 1) -> Move:
    return start(
        "m1",
        deployment="agg",
        replica="r1",
        instance="agg-r1",
        source="A",
        target="B",
        mode="snapshot",
        now=now,
        attempt=attempt,
    )


def test_a_move_goes_offer_moving_done_and_the_replica_changes_node_only_at_done() -> None:
    move = _move()
    assert move.state == MoveState.OFFER and holder(move) == "A"
    assert offer_requests([move], "B") == ["m1"] and offer_requests([move], "A") == []
    assert orders([move], "A") == []

    move = on_offer(move, MoveOffer(move="m1", offer=OFFER), node="B", now=101)
    assert move.state == MoveState.MOVING and holder(move) == "A"
    assert offer_requests([move], "B") == []
    (order,) = orders([move], "A")
    assert (order.move, order.instance, order.mode, order.offer) == (
        "m1",
        "agg-r1",
        "snapshot",
        OFFER,
    )
    assert orders([move], "B") == []

    move = on_report(
        move, MoveReport(move="m1", state="running", step="transfer"), node="A", now=102
    )
    assert move.state == MoveState.MOVING and move.step == "transfer" and holder(move) == "A"

    move = on_report(move, MoveReport(move="m1", state="done", step="done"), node="A", now=103)
    assert move.state == MoveState.DONE and holder(move) == "B"
    assert move.offer is None  # the ticket is not kept once the move has ended
    assert orders([move], "A") == [] and offer_requests([move], "B") == []


def test_reports_from_the_wrong_node_or_move_or_a_repeated_heartbeat_change_nothing() -> None:
    move = _move()
    offer = MoveOffer(move="m1", offer=OFFER)
    assert on_offer(move, offer, node="A", now=101) == move  # only the target offers
    assert on_offer(move, MoveOffer(move="m2", offer=OFFER), node="B", now=101) == move
    moving = on_offer(move, offer, node="B", now=101)
    assert on_offer(moving, MoveOffer(move="m1", offer={"other": 1}), node="B", now=102) == moving
    done = MoveReport(move="m1", state="done")
    assert on_report(move, done, node="A", now=102) == move  # not ordered yet
    assert on_report(moving, done, node="B", now=102) == moving  # only the source reports
    finished = on_report(moving, done, node="A", now=102)
    failed = MoveReport(move="m1", state="failed", error="late")
    assert on_report(finished, failed, node="A", now=103) == finished  # done stays done


def test_a_refused_offer_or_a_failed_move_leaves_the_replica_on_the_source() -> None:
    refused = on_offer(_move(), MoveOffer(move="m1", error="no room"), node="B", now=101)
    assert refused.state == MoveState.FAILED and holder(refused) == "A"
    assert refused.error is not None and "no room" in refused.error

    moving = on_offer(_move(), MoveOffer(move="m1", offer=OFFER), node="B", now=101)
    report = MoveReport(move="m1", state="failed", step="transfer", error="channel broke")
    failed = on_report(moving, report, node="A", now=102)
    assert failed.state == MoveState.FAILED and holder(failed) == "A"
    assert (failed.step, failed.error, failed.offer) == ("transfer", "channel broke", None)
    assert orders([failed], "A") == [] and offer_requests([failed], "B") == []


def test_a_missing_offer_expires_but_a_move_under_way_does_not() -> None:
    move = _move(now=100)
    assert expire(move, now=100 + OFFER_TIMEOUT_S - 1) == move
    expired = expire(move, now=100 + OFFER_TIMEOUT_S)
    assert expired.state == MoveState.FAILED and "no offer" in (expired.error or "")
    moving = on_offer(move, MoveOffer(move="m1", offer=OFFER), node="B", now=101)
    assert expire(moving, now=10**9) == moving  # it may have committed: wait for the source


def test_a_failed_try_is_retried_then_replaced() -> None:
    failed = on_offer(_move(), MoveOffer(move="m1", error="x"), node="B", now=101)
    assert after_failure(failed) == "retry"
    last = on_offer(_move(attempt=MAX_ATTEMPTS), MoveOffer(move="m1", error="x"), node="B", now=1)
    assert after_failure(last) == "replace"
    with pytest.raises(ValueError, match="not failed"):
        after_failure(_move())


def test_a_move_to_its_own_node_is_refused() -> None:
    with pytest.raises(ValueError, match="both node A"):
        start(
            "m1",
            deployment="d",
            replica="r",
            instance="d-r",
            source="A",
            target="A",
            mode="live",
            now=0,
        )


def test_cancel_ends_a_move_waiting_for_its_offer_and_marks_a_moving_one() -> None:
    waiting = cancel(_move(), now=101.0)
    assert (waiting.state, waiting.cancelled_at) == (MoveState.FAILED, 101.0)
    assert "cancelled" in (waiting.error or "") and after_failure(waiting) == "replace"
    moving = on_offer(_move(), MoveOffer(move="m1", offer=OFFER), node="B", now=101.0)
    marked = cancel(moving, now=102.0)
    assert (marked.state, marked.cancelled_at, marked.offer) == (MoveState.MOVING, 102.0, OFFER)
    assert cancel(marked, now=103.0) == marked
    assert cancels([marked], "A") == ["m1"] and cancels([marked], "B") == []
    assert cancels([moving], "A") == []
    assert [o.move for o in orders([marked], "A")] == ["m1"]  # still ordered: never restarted
    report = MoveReport(move="m1", state="failed", step="transfer", error="cancelled at transfer")
    failed = on_report(marked, report, node="A", now=104.0)
    assert failed.state == MoveState.FAILED and after_failure(failed) == "replace"
    assert cancels([failed], "A") == []
    done = on_report(marked, MoveReport(move="m1", state="done", step="done"), node="A", now=104.0)
    assert done.state == MoveState.DONE  # the target had committed: it stands
    for ended in (failed, done):
        with pytest.raises(ValueError, match="has ended"):
            cancel(ended, now=105.0)
