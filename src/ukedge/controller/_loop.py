"""The leader's loop: one controller process schedules and reconciles, every one serves the API.

Leadership on PostgreSQL is a session advisory lock (``pg_try_advisory_lock``) held on a
connection of its own: when the leader dies, its session ends, PostgreSQL releases the lock and
the next standby to try (each tries every tick) takes over within a tick. A leader that loses
its connection stops acting at once (it checks the session before each pass) and competes again.
On SQLite the database is one file of one machine and the process that serves it is the leader.

Each pass (``tick_s``, about a second): the fleet is read as views; nodes without a heartbeat
for ``not_ready_after_s`` become NotReady (a write only when the views show such a node; none
until this process has led for ``not_ready_after_s``, since agents back off while no controller
answers and a new leader would otherwise find every heartbeat old); the
pure planner decides, and its plan is written in one transaction, only when it changes
something (a plan of events alone, such as a deployment waiting for room, writes nothing, and
each event is logged when it first appears, not every pass). Passes run in a worker thread (the
database calls block) so the API's event loop never waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from sqlalchemy import Connection, text

from ukedge.controller._db import Database
from ukedge.controller._fleet import DeploymentView, NodeView, ReplicaView, ScoringStrategy
from ukedge.controller._heartbeat import instance_name
from ukedge.controller._movepass import (
    moving_events,
    plan_drain_moves,
    plan_rebalance_moves,
    start_moves,
)
from ukedge.controller._planner import plan
from ukedge.controller._reconcile import PlanLike, apply_plan, mark_not_ready, read_views
from ukedge.host.link import MoveMode

__all__ = ["Leadership", "Planner", "ReconcileLoop", "default_planner"]

log = logging.getLogger(__name__)

#: The advisory lock key of the scheduling leader ("ukedge-l" in ASCII).
LEADER_LOCK = 0x756B656467652D6C


class Planner(Protocol):
    def __call__(
        self,
        deployments: Sequence[DeploymentView],
        nodes: Sequence[NodeView],
        replicas: Sequence[ReplicaView],
        *,
        now: float,
        grace_s: float,
        strategy: ScoringStrategy = ...,
        new_id: Callable[[], str],
        keep: Collection[tuple[str, str]] = ...,
    ) -> PlanLike: ...


def default_planner() -> Planner:
    """The reconciler's planner: :func:`ukedge.controller._planner.plan`."""
    return plan


class Leadership:
    """Whether this process is the scheduling leader (see the module's text)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._session: Connection | None = None

    @property
    def leading(self) -> bool:
        """Whether this process led at its last check (without checking again)."""
        return not self.shared or self._session is not None

    @property
    def shared(self) -> bool:
        return self._db.dialect == "postgresql"

    def hold(self) -> bool:
        """True when this process leads now (acquiring the lock if it is free)."""
        if not self.shared:
            return True
        if self._session is not None:
            try:
                self._session.execute(text("SELECT 1"))
                return True
            except Exception:
                log.warning("lost the leader's database session; no longer leading")
                self.release()
        try:
            session = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except Exception as exc:
            log.warning("cannot reach the database to compete for leadership: %s", exc)
            return False
        won = session.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK})
        if won.scalar_one():
            log.info("this controller is now the scheduling leader")
            self._session = session
            return True
        session.close()
        return False

    def release(self) -> None:
        if self._session is not None:
            # Unlocked first: the server frees a closed session's locks only once its backend
            # has noticed the close, so another process asking at once could still be refused.
            # Then invalidated, not returned to the pool: ending a session whose unlock failed
            # (the connection was lost) is what frees the lock.
            with contextlib.suppress(Exception):
                self._session.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK})
            with contextlib.suppress(Exception):
                self._session.invalidate()
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None


class ReconcileLoop:
    """Runs passes while the app lives (started and stopped by its lifespan)."""

    def __init__(
        self,
        db: Database,
        planner: Planner,
        *,
        tick_s: float,
        not_ready_after_s: float,
        grace_s: float,
        strategy: ScoringStrategy,
        rebalance_above: float | None = None,
        rebalance_mode: MoveMode = "live",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.rebalance_above = rebalance_above
        self.rebalance_mode: MoveMode = rebalance_mode
        self.planner = planner
        self.tick_s = tick_s
        self.not_ready_after_s = not_ready_after_s
        self.grace_s = grace_s
        self.strategy = strategy
        self.clock = clock
        self.leadership = Leadership(db)
        self.passes = 0
        self._events: set[str] = set()  # the last pass's, logged when they first appeared
        self._task: asyncio.Task[None] | None = None
        #: When this process last began to lead (its clock); None while it does not lead.
        self._leading_since: float | None = None

    def run_once(self) -> bool:
        """One pass when leading (blocking); False when another process leads."""
        if not self.leadership.hold():
            self._leading_since = None
            return False
        now = self.clock()
        if self._leading_since is None:
            self._leading_since = now
        with self.db.read() as connection:
            fleet = read_views(connection)
        # A node's silence counts from when this process began to lead, not only from its last
        # heartbeat: agents back off while no controller answers, so after a restart (or a
        # failover) every heartbeat looks old, and judging by them alone would declare the
        # whole fleet lost in the first pass.
        judging = now - self._leading_since >= self.not_ready_after_s
        quiet = now - self.not_ready_after_s
        if judging and any(
            n.ready and n.last_seen is not None and n.last_seen < quiet for n in fleet.nodes
        ):
            with self.db.write() as connection:
                for name in mark_not_ready(connection, now=now, after_s=self.not_ready_after_s):
                    log.warning(
                        "node %s is NotReady: no heartbeat for %gs", name, self.not_ready_after_s
                    )
            with self.db.read() as connection:
                fleet = read_views(connection)
        with self.db.read() as connection:
            moving = plan_drain_moves(
                connection,
                fleet.deployments,
                fleet.nodes,
                fleet.replicas,
                instance_name=instance_name,
                now=now,
                strategy=self.strategy,
            )
            if self.rebalance_above is not None:
                moving = plan_rebalance_moves(
                    connection,
                    moving,
                    fleet.deployments,
                    fleet.nodes,
                    fleet.replicas,
                    above=self.rebalance_above,
                    mode=self.rebalance_mode,
                    instance_name=instance_name,
                    now=now,
                    strategy=self.strategy,
                )
        decided = self.planner(
            fleet.deployments,
            fleet.nodes,
            fleet.replicas,
            keep=moving.keep,
            now=now,
            # The planner counts a lost node's grace from its last heartbeat; ours starts once
            # the node is NotReady, so replicas move after timeout + grace (issue 10).
            grace_s=self.not_ready_after_s + self.grace_s,
            strategy=self.strategy,
            new_id=lambda: secrets.token_hex(4),
        )
        if moving.start:
            with self.db.write() as connection:
                start_moves(connection, moving.start)
        if decided.add or decided.remove or decided.rollbacks:
            with self.db.write() as connection:
                apply_plan(connection, decided, now=now)
        self._log_events([*moving_events(moving), *decided.events])
        self.passes += 1
        return True

    def _log_events(self, events: Sequence[str]) -> None:
        """Log the plan's events that the last pass did not have: a deployment that waits
        ("no node fits") is planned again every pass, and says so once, not every second."""
        for event in events:
            if event not in self._events:
                log.info("%s", event)
        self._events = set(events)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("reconcile pass failed; trying again next tick")
            await asyncio.sleep(self.tick_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ukedge-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.leadership.release)
