"""The controller's moves this node takes part in, and the replicas they hold still.

A move the controller drives (``ukedge node drain --migrate``) reaches the node in heartbeat
replies (:mod:`._wire`): as *target* it is asked for an offer, as *source* it is ordered to
move an instance with the target's offer, and it reports how the move stands in each heartbeat
until the controller stops ordering it. Two moments would make the reconciler undo a move, so
the replicas concerned are *held* (neither created, replaced nor removed, see
:func:`._reconcile.plan_reconcile`):

* the **source** has removed its instance at the commit, but its desired state lists the
  replica until the controller has recorded the move: it holds the replica from the order on,
  until it applies a desired state of the generation the controller answered with once it had
  the outcome (the first reply that no longer orders the move, after the node reported it
  ended: that reply's state was made after the move was recorded);
* the **target** records the arrived instance at the commit, before the desired state that
  lists it comes (the source reports ``done`` only after the commit, and the controller then
  bumps the target's generation): it holds the replica until a desired state lists it or, for
  a move that ended without the controller recording it here (the source could not learn the
  outcome of its commit), until the controller has answered ``HOLD_BEATS`` heartbeats and
  ``HOLD_S`` seconds have passed without listing it. Counted in answered heartbeats, not time
  alone, so a controller outage never lets the target drop what it runs.

Idempotence: the order is written here (temporary name, fsync, rename) before the move starts,
so a repeated order, also one that comes after an agent restart, never starts it twice; a move
an earlier agent started and this one does not know is reported from what the node has (the
instance still here: failed, the agent's start gave it back; gone: done). The holds survive a
restart the same way. Offers are not kept: their tickets die with the agent, and a target
still asked for one makes a new one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from ukedge.errors import UkedgeError
from ukedge.host._models import Instance, PortMapping
from ukedge.host.link._files import read_private, write_private
from ukedge.host.link._reconcile import marks_of
from ukedge.host.link._wire import (
    DesiredState,
    HeartbeatReply,
    MoveOffer,
    MoveOrder,
    MoveReport,
)

__all__ = ["FILE_NAME", "HOLD_BEATS", "HOLD_S", "MoveBook", "MoveDriver", "MoveProgress"]

log = logging.getLogger(__name__)

#: In the agent's data directory.
FILE_NAME = "moves.json"
#: A target's hold on an arrived replica its desired state does not list ends after this many
#: answered heartbeats and this many seconds, whichever comes last.
HOLD_BEATS = 10
HOLD_S = 120.0
#: Ended moves whose ids are kept, so a late repeat of their order starts nothing.
_FINISHED_KEPT = 256

State = Literal["running", "done", "failed"]


@dataclass(frozen=True)
class MoveProgress:
    """How a move out of this node stands, as its migration service says."""

    state: State
    step: str
    error: str | None = None


class MoveDriver(Protocol):
    """The node's migration service, as the link uses it (the agent provides it: the link sits
    below the migration room)."""

    def offer(self) -> dict[str, Any]:
        """A new offer (a ``MigrationOffer`` as JSON) reachable at the node's migration host."""
        ...

    def start(self, order: MoveOrder, ports: list[PortMapping]) -> str:
        """Start moving ``order.instance`` with ``order.offer``, publishing ``ports`` on the
        target where free; the migration's id. Raises UkedgeError when it cannot start."""
        ...

    def progress(self, migration: str) -> MoveProgress | None:
        """How the migration stands; None when the service does not know it."""
        ...

    def cancel(self, migration: str) -> None:
        """Cancel the migration as ``DELETE /v1/migrations/{id}`` does (nothing once it has
        ended or committed: its progress says how it ended)."""
        ...


@dataclass(frozen=True)
class _Outgoing:
    move: str
    instance: str
    deployment: str
    replica: str
    migration: str | None = None
    state: State = "running"
    step: str = ""
    error: str | None = None
    #: Set once the controller has the outcome: the hold ends when a desired state of this
    #: generation (or a newer one) is applied.
    until: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.deployment, self.replica)

    def report(self) -> MoveReport:
        return MoveReport(move=self.move, state=self.state, step=self.step, error=self.error)


@dataclass(frozen=True)
class _Arrival:
    instance: str
    deployment: str
    replica: str
    arrived_at: float
    beats: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.deployment, self.replica)


@dataclass
class _Book:
    outgoing: list[_Outgoing] = field(default_factory=list)
    arrivals: list[_Arrival] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


class MoveBook:
    """``<data>/moves.json``: the moves out and in this node takes part in; thread-safe (the
    heartbeat, the reconcile and the migration listener's threads all use it)."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        hold_beats: int = HOLD_BEATS,
        hold_s: float = HOLD_S,
    ) -> None:
        self.path = path
        self._clock = clock
        self.hold_beats = hold_beats
        self.hold_s = hold_s
        self._lock = threading.RLock()
        self._book = self._load()
        #: Offers made, by move, while the controller still asks for them.
        self._offers: dict[str, MoveOffer] = {}

    # -- persistence -------------------------------------------------------------------------------

    def _load(self) -> _Book:
        text = read_private(self.path)
        if text is None:
            return _Book()
        try:
            raw = json.loads(text)
            return _Book(
                outgoing=[_Outgoing(**o) for o in raw.get("outgoing", [])],
                arrivals=[_Arrival(**a) for a in raw.get("arrivals", [])],
                finished=[str(m) for m in raw.get("finished", [])],
            )
        except (ValueError, TypeError) as exc:
            bad = self.path.with_name(self.path.name + ".bad")
            self.path.replace(bad)
            log.error(
                "%s is not a move book (%s); moved it to %s and starting without: a move under "
                "way through this node may be undone by the reconciler",
                self.path,
                exc,
                bad,
            )
            return _Book()

    def _save(self) -> None:
        write_private(
            self.path, json.dumps(asdict(self._book), indent=1), crash_name="link.moves.save"
        )

    # -- the reconciler's side ---------------------------------------------------------------------

    def held(self, desired: DesiredState) -> set[tuple[str, str]]:
        """The replicas a reconcile pass applying ``desired`` must leave alone."""
        listed = {(i.deployment, i.replica) for i in desired.instances}
        now = self._clock()
        with self._lock:
            keys = {
                o.key
                for o in self._book.outgoing
                if o.until is None or desired.generation < o.until
            }
            keys |= {
                a.key
                for a in self._book.arrivals
                if a.key not in listed and not self._expired(a, now)
            }
        return keys

    def _expired(self, arrival: _Arrival, now: float) -> bool:
        return arrival.beats >= self.hold_beats and now - arrival.arrived_at >= self.hold_s

    def settle(self, desired: DesiredState) -> None:
        """After a pass applied ``desired``: the holds it ended are dropped."""
        listed = {(i.deployment, i.replica) for i in desired.instances}
        now = self._clock()
        with self._lock:
            book = self._book
            ended = [
                o for o in book.outgoing if o.until is not None and desired.generation >= o.until
            ]
            gone = [a for a in book.arrivals if a.key in listed or self._expired(a, now)]
            if not ended and not gone:
                return
            for arrival in gone:
                if arrival.key not in listed:
                    log.warning(
                        "instance %s moved here is not in the desired state after %d heartbeats:"
                        " no longer held (its move ended without the controller recording it "
                        "here)",
                        arrival.instance,
                        arrival.beats,
                    )
            book.outgoing = [o for o in book.outgoing if o not in ended]
            book.arrivals = [a for a in book.arrivals if a not in gone]
            book.finished = (book.finished + [o.move for o in ended])[-_FINISHED_KEPT:]
            self._save()

    # -- the migration listener's side -------------------------------------------------------------

    def arrived(self, instance: Instance) -> None:
        """``instance`` is about to be recorded here by a move: hold it if it is the
        controller's (before the record exists, so no pass sees it unheld)."""
        marks = marks_of(instance.labels)
        if marks is None or marks.replica is None:
            return
        arrival = _Arrival(instance.name, marks.deployment, marks.replica, self._clock())
        with self._lock:
            self._book.arrivals = [a for a in self._book.arrivals if a.key != arrival.key]
            self._book.arrivals.append(arrival)
            self._save()
        log.info("holding %s, moved here, until the desired state lists it", instance.name)

    # -- the heartbeat's side ----------------------------------------------------------------------

    def offers(self) -> list[MoveOffer]:
        with self._lock:
            return list(self._offers.values())

    def reports(self, driver: MoveDriver, present: Callable[[str], bool]) -> list[MoveReport]:
        """The moves out to report in this heartbeat, brought up to date."""
        with self._lock:
            book = self._book
            updated = [self._refresh(o, driver, present) for o in book.outgoing]
            if updated != book.outgoing:
                book.outgoing = updated
                self._save()
            return [o.report() for o in updated if o.until is None]

    @staticmethod
    def _refresh(move: _Outgoing, driver: MoveDriver, present: Callable[[str], bool]) -> _Outgoing:
        if move.state != "running":
            return move
        progress = driver.progress(move.migration) if move.migration else None
        if progress is not None:
            return replace(move, state=progress.state, step=progress.step, error=progress.error)
        if present(move.instance):
            why = "the agent restarted during the move; the instance stayed on this node"
            return replace(move, state="failed", error=why)
        return replace(move, state="done", step="done")

    def answered(
        self,
        reply: HeartbeatReply,
        *,
        reported: Collection[str],
        desired: Callable[[], DesiredState | None],
        driver: MoveDriver,
    ) -> None:
        """Act on a heartbeat's reply: offers asked for, moves ordered, moves whose outcome the
        controller has (``reported``: the moves this heartbeat reported ended)."""
        with self._lock:
            self._offers = {
                move: self._offers.get(move) or _offer(driver, move)
                for move in reply.offer_requests
            }
            book = self._book
            book.arrivals = [replace(a, beats=a.beats + 1) for a in book.arrivals]
            ordered = {order.move for order in reply.moves}
            known = {o.move for o in book.outgoing} | set(book.finished)
            current: DesiredState | None = None
            if (reply.moves and not known >= ordered) or any(
                o.until is None and o.move in reported and o.move not in ordered
                for o in book.outgoing
            ):
                current = desired()
            changed = False
            cancelled = set(reply.cancels)
            for order in reply.moves:
                if order.move in known:
                    continue
                if order.move in cancelled:  # cancelled before this node started it
                    why = "cancelled by the operator before it started"
                    book.outgoing.append(
                        _Outgoing(order.move, order.instance, "", "", state="failed", error=why)
                    )
                else:
                    self._start(order, current, driver)
                changed = True
            for move in book.outgoing:
                if move.move in cancelled and move.state == "running" and move.migration:
                    driver.cancel(move.migration)
            generation = (
                reply.desired.generation
                if reply.desired is not None
                else (current.generation if current is not None else 0)
            )
            for n, move in enumerate(book.outgoing):
                if move.until is None and move.move in reported and move.move not in ordered:
                    book.outgoing[n] = replace(move, until=generation)
                    changed = True
            if changed or book.arrivals:
                self._save()

    def _start(self, order: MoveOrder, desired: DesiredState | None, driver: MoveDriver) -> None:
        item = next(
            (i for i in (desired.instances if desired else []) if i.name == order.instance), None
        )
        if item is None:
            move = _Outgoing(
                order.move,
                order.instance,
                "",
                "",
                state="failed",
                step="prepare",
                error=f"instance {order.instance} is not in this node's desired state",
            )
            self._book.outgoing.append(move)
            self._save()
            return
        move = _Outgoing(order.move, order.instance, item.deployment, item.replica)
        self._book.outgoing.append(move)
        self._save()  # before it starts: a repeated order, even after a restart, starts nothing
        try:
            migration = driver.start(order, list(item.request.ports))
        except UkedgeError as exc:
            log.warning("move %s of %s could not start: %s", order.move, order.instance, exc)
            done = replace(move, state="failed", step="prepare", error=str(exc))
        else:
            log.info("move %s of %s started (%s)", order.move, order.instance, migration)
            done = replace(move, migration=migration)
        self._book.outgoing[self._book.outgoing.index(move)] = done


def _offer(driver: MoveDriver, move: str) -> MoveOffer:
    try:
        return MoveOffer(move=move, offer=driver.offer())
    except UkedgeError as exc:
        return MoveOffer(move=move, error=str(exc)[:4096])
