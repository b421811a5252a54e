"""The agent's book of the controller's moves (``ukedge.host.link.MoveBook``): offers made
while asked for, an order started once (also after a restart), reports until the controller
has the outcome, and the holds that keep the reconciler from undoing a move.

The migration service is replaced by a recording driver here: what is under test is the book's
decisions; tests/link/test_link_moves_vm.py runs the real service between two agents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ukedge.errors import MigrationError
from ukedge.host import Instance, InstanceState, RunRequest
from ukedge.host.link import (
    DEPLOYMENT_LABEL,
    REPLICA_LABEL,
    REVISION_LABEL,
    DesiredInstance,
    DesiredState,
    HeartbeatReply,
    MoveBook,
    MoveOrder,
    MoveProgress,
)
from ukedge.ports import PortMapping

OFFER: dict[str, Any] = {"host": "127.0.0.1", "port": 1}


class Driver:
    """Records what the book asks of the migration service."""

    def __init__(self) -> None:
        self.offers = 0
        self.started: list[tuple[str, list[PortMapping]]] = []
        self.progress_of: dict[str, MoveProgress] = {}
        self.refuse: str | None = None
        self.cancelled: list[str] = []

    def offer(self) -> dict[str, Any]:
        if self.refuse:
            raise MigrationError(self.refuse, "prepare")
        self.offers += 1
        return {**OFFER, "n": self.offers}

    def start(self, order: MoveOrder, ports: list[PortMapping]) -> str:
        if self.refuse:
            raise MigrationError(self.refuse, "prepare")
        self.started.append((order.instance, ports))
        return f"mig{len(self.started)}"

    def progress(self, migration: str) -> MoveProgress | None:
        return self.progress_of.get(migration)

    def cancel(self, migration: str) -> None:
        self.cancelled.append(migration)


PORT = PortMapping(host_port=18080, guest_port=8080)


def item(replica: str = "r1") -> DesiredInstance:
    return DesiredInstance(
        name=f"web-{replica}",
        deployment="web",
        replica=replica,
        revision=1,
        request=RunRequest(image="hub/app@sha256:" + "a" * 64, ports=[PORT]),
    )


def state(generation: int, *items: DesiredInstance) -> DesiredState:
    return DesiredState(generation=generation, instances=list(items))


def reply(
    generation: int | None = None,
    *items: DesiredInstance,
    moves: list[str] = (),
    offers: list[str] = (),
    cancels: list[str] = (),
) -> HeartbeatReply:
    return HeartbeatReply(
        desired=state(generation, *items) if generation is not None else None,
        heartbeat_interval_s=1,
        moves=[MoveOrder(move=m, instance="web-r1", mode="live", offer=OFFER) for m in moves],
        offer_requests=list(offers),
        cancels=list(cancels),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_source_starts_once_reports_and_holds_until_the_recorded_generation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "moves.json"
    book, driver = MoveBook(path), Driver()
    current = state(3, item())
    book.answered(reply(None, moves=["m1"]), reported=(), desired=lambda: current, driver=driver)
    assert driver.started == [("web-r1", [PORT])]
    assert book.held(current) == {("web", "r1")}
    # The same order again, and again from a restarted agent: nothing starts twice.
    book.answered(reply(None, moves=["m1"]), reported=(), desired=lambda: current, driver=driver)
    again = MoveBook(path)
    again.answered(reply(None, moves=["m1"]), reported=(), desired=lambda: current, driver=driver)
    assert len(driver.started) == 1
    driver.progress_of["mig1"] = MoveProgress("running", "transfer")
    [running] = book.reports(driver, present=lambda name: True)
    assert (running.move, running.state, running.step) == ("m1", "running", "transfer")
    driver.progress_of["mig1"] = MoveProgress("done", "done")
    [done] = book.reports(driver, present=lambda name: False)
    assert done.state == "done"
    # Still ordered (the controller has not read the report yet): still reported, still held.
    book.answered(
        reply(None, moves=["m1"]), reported={"m1"}, desired=lambda: current, driver=driver
    )
    assert [r.move for r in book.reports(driver, present=lambda name: False)] == ["m1"]
    # The controller recorded it: the reply's state (generation 4) no longer lists it.
    book.answered(reply(4), reported={"m1"}, desired=lambda: current, driver=driver)
    assert book.reports(driver, present=lambda name: False) == []
    assert book.held(current) == {("web", "r1")}  # a pass on the older state must not recreate
    newer = state(4)
    assert book.held(newer) == set()
    book.settle(newer)
    assert json.loads(path.read_text())["outgoing"] == []
    # A late repeat of the finished order starts nothing.
    book.answered(reply(None, moves=["m1"]), reported=(), desired=lambda: newer, driver=driver)
    assert len(driver.started) == 1


def test_a_move_an_earlier_agent_started_is_reported_from_what_the_node_has(
    tmp_path: Path,
) -> None:
    path = tmp_path / "moves.json"
    driver = Driver()
    current = state(2, item("r1"), item("r2"))
    book = MoveBook(path)
    book.answered(reply(None, moves=["m1"]), reported=(), desired=lambda: current, driver=driver)
    restarted = MoveBook(path)  # the migration service forgot its moves
    [report] = restarted.reports(Driver(), present=lambda name: True)
    assert report.state == "failed" and "restarted" in (report.error or "")
    gone = MoveBook(tmp_path / "other.json")
    gone.answered(reply(None, moves=["m2"]), reported=(), desired=lambda: current, driver=driver)
    [report] = MoveBook(tmp_path / "other.json").reports(Driver(), present=lambda name: False)
    assert report.state == "done"


def test_an_order_that_cannot_start_is_reported_failed(tmp_path: Path) -> None:
    book, driver = MoveBook(tmp_path / "moves.json"), Driver()
    driver.refuse = "instance web-r1 is already moving"
    book.answered(
        reply(None, moves=["m1"]), reported=(), desired=lambda: state(1, item()), driver=driver
    )
    [report] = book.reports(driver, present=lambda name: True)
    assert (report.state, report.step) == ("failed", "prepare")
    assert "already moving" in (report.error or "")
    unknown = MoveBook(tmp_path / "other.json")
    unknown.answered(
        reply(None, moves=["m2"]), reported=(), desired=lambda: state(1), driver=Driver()
    )
    [report] = unknown.reports(driver, present=lambda name: True)
    assert report.state == "failed" and "not in this node's desired state" in (report.error or "")


def test_a_cancelled_move_is_cancelled_while_it_runs_and_never_started(tmp_path: Path) -> None:
    """The controller's ``cancels``: a move under way is cancelled through the migration service
    (as ``DELETE /v1/migrations/{id}``) each reply until it ended; one ordered and cancelled
    in the same reply is never started and reported failed."""
    book, driver = MoveBook(tmp_path / "moves.json"), Driver()
    current = state(1, item())
    book.answered(reply(None, moves=["m1"]), reported=(), desired=lambda: current, driver=driver)
    driver.progress_of["mig1"] = MoveProgress("running", "transfer")
    book.reports(driver, present=lambda name: True)
    cancel = reply(None, moves=["m1"], cancels=["m1"])
    book.answered(cancel, reported=(), desired=lambda: current, driver=driver)
    assert driver.cancelled == ["mig1"]
    driver.progress_of["mig1"] = MoveProgress("failed", "transfer", "cancelled at transfer")
    [report] = book.reports(driver, present=lambda name: True)
    assert (report.state, report.error) == ("failed", "cancelled at transfer")
    book.answered(cancel, reported={"m1"}, desired=lambda: current, driver=driver)
    assert driver.cancelled == ["mig1"]  # ended: not asked again

    other = MoveBook(tmp_path / "other.json")
    both = reply(None, moves=["m2"], cancels=["m2"])
    other.answered(both, reported=(), desired=lambda: current, driver=driver)
    assert len(driver.started) == 1
    [report] = other.reports(driver, present=lambda name: True)
    assert report.state == "failed" and "cancelled" in (report.error or "")


def test_offers_are_made_once_and_kept_while_asked_for(tmp_path: Path) -> None:
    book, driver = MoveBook(tmp_path / "moves.json"), Driver()
    book.answered(reply(offers=["m1"]), reported=(), desired=lambda: None, driver=driver)
    book.answered(reply(offers=["m1"]), reported=(), desired=lambda: None, driver=driver)
    [offer] = book.offers()
    assert (offer.move, offer.offer, driver.offers) == ("m1", {**OFFER, "n": 1}, 1)
    book.answered(reply(), reported=(), desired=lambda: None, driver=driver)
    assert book.offers() == []
    driver.refuse = "the migration listener cannot start"
    book.answered(reply(offers=["m2"]), reported=(), desired=lambda: None, driver=driver)
    [refused] = book.offers()
    assert refused.offer is None and refused.error == "the migration listener cannot start"


def arrived(name: str = "web-r1", replica: str = "r1") -> Instance:
    labels = {DEPLOYMENT_LABEL: "web", REPLICA_LABEL: replica, REVISION_LABEL: "1"}
    return Instance(
        id="1" * 32,
        name=name,
        image="app:1",
        image_digest="sha256:" + "0" * 64,
        state=InstanceState.RUNNING,
        created_at=1.0,
        memory_mib=64,
        vcpus=1,
        workdir="/tmp/x",
        labels=labels,
    )


def test_target_holds_an_arrival_until_listed(tmp_path: Path) -> None:
    path = tmp_path / "moves.json"
    book = MoveBook(path)
    book.arrived(arrived())
    book.arrived(arrived("hand-made", "r9").model_copy(update={"labels": {}}))  # not ours
    before = state(5)
    assert MoveBook(path).held(before) == {("web", "r1")}  # kept across a restart
    listed = state(6, item())
    assert book.held(listed) == set()
    book.settle(listed)
    assert book.held(before) == set()


@pytest.mark.parametrize(
    ("beats", "seconds", "held"), [(9, 500, True), (50, 119, True), (10, 120, False)]
)
def test_target_hold_of_an_unlisted_arrival_ends_after_beats_and_time(
    tmp_path: Path, beats: int, seconds: float, held: bool
) -> None:
    """A move that ended without the controller recording it here (the source could not learn
    whether its commit went through) must not keep a copy forever, nor lose one to an outage:
    answered heartbeats and time must both have passed."""
    clock = Clock()
    book = MoveBook(tmp_path / "moves.json", clock=clock)
    book.arrived(arrived())
    for _ in range(beats):
        book.answered(reply(), reported=(), desired=lambda: None, driver=Driver())
    clock.now += seconds
    assert (book.held(state(7)) == {("web", "r1")}) is held
    book.settle(state(7))
    assert (book.held(state(7)) == {("web", "r1")}) is held
