"""A controller-driven move of one replica to another node, as pure state: no database, no I/O.

The controller reaches a node only by answering its heartbeat, so a move advances one
heartbeat at a time::

    offer ──(target reports an offer)──► moving ──(source reports done)──► done
      │                                    │
      └──(target refuses / no offer) ──────┴──(source reports failed / silent)──► failed

* ``offer``: the target's heartbeat replies ask it for an offer (:func:`offer_requests`).
* ``moving``: the source's replies order the move with that offer (:func:`orders`), until the
  source reports how it went. The same order is repeated until then: the source knows the move
  by its id and never starts it twice.
* ``done``: the source has seen the target commit; only now does the replica's row name the
  target. ``failed``: the instance still runs on the source (the migration protocol resumes it
  whatever went wrong before the commit), and :func:`after_failure` says whether to try again
  with a fresh offer or to fall back to the planner's make-before-break replacement.

So a replica is in exactly one node's desired state at every moment: the source's while the
move is ``offer`` or ``moving`` (the target's must not list it, or the target would start a
fresh copy), the target's from ``done`` on.

The operator may cancel a try (:func:`cancel`): one still waiting for its offer fails at
once; a ``moving`` one is marked (``cancelled_at``) and the source's replies ask it to cancel
(:func:`cancels`), which it does as ``DELETE /v1/migrations/{id}`` does, so it ends ``failed``
as the source reports it, or ``done`` when the target had committed already. A cancelled try
is not tried again: a drain replaces the replica instead.

A source that stops reporting a move it was ordered to make (killed mid-move) is not given up
on by time alone while the move may have committed: the move stays ``moving`` until the
source reports again (its agent finishes or resumes an interrupted move at start) or the node
is declared lost, which the planner handles as for any lost node.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ukedge.host.link import MoveMode, MoveOffer, MoveOrder, MoveReport

__all__ = [
    "CANCELLED",
    "MAX_ATTEMPTS",
    "OFFER_TIMEOUT_S",
    "Move",
    "MoveState",
    "after_failure",
    "cancel",
    "cancels",
    "expire",
    "holder",
    "offer_requests",
    "on_offer",
    "on_report",
    "orders",
    "start",
]

#: Tries (each with a fresh offer) before the replica is replaced instead of moved.
MAX_ATTEMPTS = 2

#: How long a target may take to report an offer (a few heartbeats) before the try fails.
OFFER_TIMEOUT_S = 60.0


class MoveState(enum.StrEnum):
    OFFER = "offer"  # waiting for the target's offer
    MOVING = "moving"  # the source is told to move the instance with the offer
    DONE = "done"  # the instance runs on the target; the replica is recorded there
    FAILED = "failed"  # the instance still runs on the source

    @property
    def active(self) -> bool:
        return self in (MoveState.OFFER, MoveState.MOVING)


@dataclass(frozen=True)
class Move:
    """One try at moving ``deployment``/``replica`` from node ``source`` to node ``target``.

    ``instance`` is the replica's instance name on the source (the target keeps it). ``offer``
    holds the target's offer while the move needs it (its ticket is a secret: it is dropped as
    soon as the move has ended). ``attempt`` counts from 1.
    """

    id: str
    deployment: str
    replica: str
    instance: str
    source: str
    target: str
    mode: MoveMode
    state: MoveState
    started_at: float
    updated_at: float
    attempt: int = 1
    step: str = ""
    offer: dict[str, Any] | None = None
    error: str | None = None
    #: When the operator cancelled it (None: not cancelled).
    cancelled_at: float | None = None
    #: A live move that switches to post-copy after QEMU's first pass.
    postcopy: bool = False


def start(
    move_id: str,
    *,
    deployment: str,
    replica: str,
    instance: str,
    source: str,
    target: str,
    mode: MoveMode,
    now: float,
    attempt: int = 1,
    postcopy: bool = False,
) -> Move:
    """A new try: first the target is asked for an offer."""
    if source == target:
        raise ValueError(f"move {move_id}: source and target are both node {source}")
    if postcopy and mode != "live":
        raise ValueError(f"move {move_id}: post-copy is for live moves, not {mode} ones")
    return Move(
        id=move_id,
        deployment=deployment,
        replica=replica,
        instance=instance,
        source=source,
        target=target,
        mode=mode,
        state=MoveState.OFFER,
        started_at=now,
        updated_at=now,
        attempt=attempt,
        postcopy=postcopy,
    )


def _fail(move: Move, error: str, now: float) -> Move:
    return replace(move, state=MoveState.FAILED, error=error, offer=None, updated_at=now)


def on_offer(move: Move, report: MoveOffer, *, node: str, now: float) -> Move:
    """The target's heartbeat reported ``report`` for this move. Reports from another node, for
    another move, or after the offer was taken (a heartbeat repeated) change nothing."""
    if report.move != move.id or node != move.target or move.state != MoveState.OFFER:
        return move
    if report.offer is None:
        return _fail(move, f"the target refused: {report.error or 'no reason given'}", now)
    return replace(move, state=MoveState.MOVING, offer=report.offer, updated_at=now)


def on_report(move: Move, report: MoveReport, *, node: str, now: float) -> Move:
    """The source's heartbeat reported ``report`` for this move."""
    if report.move != move.id or node != move.source or move.state != MoveState.MOVING:
        return move
    if report.state == "done":
        return replace(move, state=MoveState.DONE, step=report.step, offer=None, updated_at=now)
    if report.state == "failed":
        failed = replace(move, step=report.step)
        return _fail(failed, report.error or f"failed at {report.step or 'an unknown step'}", now)
    if report.step == move.step:
        return move
    return replace(move, step=report.step, updated_at=now)


def expire(move: Move, *, now: float, offer_timeout_s: float = OFFER_TIMEOUT_S) -> Move:
    """Fail a try whose target gave no offer in time. A ``moving`` try never expires by time:
    it may have committed (see the module's text)."""
    if move.state == MoveState.OFFER and now - move.updated_at >= offer_timeout_s:
        return _fail(move, f"the target gave no offer within {offer_timeout_s:g} s", now)
    return move


def after_failure(move: Move, *, max_attempts: int = MAX_ATTEMPTS) -> Literal["retry", "replace"]:
    """What follows a failed try: another (fresh offer) or the make-before-break replacement
    (also after a cancelled try: the operator stopped moving it)."""
    if move.state != MoveState.FAILED:
        raise ValueError(f"move {move.id} is {move.state}, not failed")
    if move.cancelled_at is not None:
        return "replace"
    return "retry" if move.attempt < max_attempts else "replace"


#: The error of a try cancelled before its source was ordered to move.
CANCELLED = "cancelled by the operator"


def cancel(move: Move, *, now: float) -> Move:
    """The operator cancels the try. Raises ValueError once it has ended (``done``: the replica
    runs on the target; cancelling cannot undo that)."""
    if not move.state.active:
        raise ValueError(f"move {move.id} has ended ({move.state}); nothing to cancel")
    if move.cancelled_at is not None:
        return move
    if move.state == MoveState.OFFER:
        return replace(_fail(move, CANCELLED, now), cancelled_at=now)
    return replace(move, cancelled_at=now, updated_at=now)


def holder(move: Move) -> str:
    """The one node whose desired state lists the replica while this try exists."""
    return move.target if move.state == MoveState.DONE else move.source


def offer_requests(moves: Iterable[Move], node: str) -> list[str]:
    """The moves ``node``'s heartbeat reply asks an offer for."""
    return sorted(m.id for m in moves if m.state == MoveState.OFFER and m.target == node)


def cancels(moves: Iterable[Move], node: str) -> list[str]:
    """The moves ``node``'s heartbeat reply asks it, as their source, to cancel."""
    return sorted(
        m.id
        for m in moves
        if m.state == MoveState.MOVING and m.source == node and m.cancelled_at is not None
    )


def orders(moves: Iterable[Move], node: str) -> list[MoveOrder]:
    """The moves ``node``'s heartbeat reply orders it to drive."""
    return [
        MoveOrder(move=m.id, instance=m.instance, mode=m.mode, offer=m.offer, postcopy=m.postcopy)
        for m in sorted(moves, key=lambda m: m.id)
        if m.state == MoveState.MOVING and m.source == node and m.offer is not None
    ]
