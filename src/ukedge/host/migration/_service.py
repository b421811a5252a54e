"""An agent's migrations: offers to take instances in, and moves of its own instances out.

Moves out run in threads of their own and are tracked in memory (``GET /v1/migrations``): a
move is a few seconds to minutes, and an agent killed during one leaves its source instance
locked by nobody, paused or running, which the agent's next start finds as it finds any
instance (a paused machine is running as far as QEMU is concerned; ``ukedge migrate`` again,
or stop it).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ukedge.errors import MigrationError, UsageError
from ukedge.host.link import MoveOrder, MoveProgress
from ukedge.host.migration._channel import MigrationIdentity, ensure_identity
from ukedge.host.migration._incoming import MigrationListener
from ukedge.host.migration._models import MigrateRequest, MigrationOffer, MigrationStatus
from ukedge.host.migration._outgoing import OutgoingMove
from ukedge.host.migration._protocol import Mode, Step, TicketBook

if TYPE_CHECKING:
    from ukedge.host._models import Instance, PortMapping
    from ukedge.host._node import LocalNode
    from ukedge.host.results import ResultSpool

__all__ = ["LinkMoves", "Migrations"]

log = logging.getLogger(__name__)

#: Finished moves kept for ``GET /v1/migrations``.
_KEPT = 100


class Migrations:
    """The migration service of one agent (both directions)."""

    def __init__(
        self,
        node: LocalNode,
        spool: ResultSpool | None,
        data_dir: Path,
        *,
        node_name: str,
        listen_host: str = "127.0.0.1",
        downtime_limit_ms: int = 300,
    ) -> None:
        self.node = node
        self.spool = spool
        self.data_dir = data_dir
        self.node_name = node_name
        self.listen_host = listen_host
        #: The downtime limit of live moves that ask for none (the agent's setting).
        self.downtime_limit_ms = downtime_limit_ms
        self.tickets = TicketBook()
        self._identity: MigrationIdentity | None = None
        self._listener: MigrationListener | None = None
        self._moves: dict[str, OutgoingMove] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._guard = threading.Lock()
        #: Told of each instance moved in, just before it is recorded here (see
        #: :class:`MigrationListener`).
        self.before_commit: Callable[[Instance], None] | None = None

    # -- target ----------------------------------------------------------------------------------

    def listener(self) -> MigrationListener:
        with self._guard:
            if self._listener is None:
                self._identity = ensure_identity(self.data_dir, self.node_name)
                self._listener = MigrationListener(
                    self.node,
                    self.spool,
                    self._identity,
                    self.tickets,
                    node_name=self.node_name,
                    host=self.listen_host,
                    before_commit=self._before_commit,
                )
            return self._listener

    def _before_commit(self, instance: Instance) -> None:
        if self.before_commit is not None:
            self.before_commit(instance)

    def offer(self, host: str | None = None) -> MigrationOffer:
        """Admit one move onto this node: where to connect (``host``, default the listener's
        address), what to trust, a one-time ticket."""
        listener = self.listener()
        port = listener.port
        identity = listener.identity
        return MigrationOffer(
            node=self.node_name,
            host=host or self.listen_host,
            port=port,
            cert_pem=identity.cert_pem,
            fingerprint=identity.fingerprint,
            ticket=self.tickets.issue(),
        )

    # -- source ----------------------------------------------------------------------------------

    def start(self, key: str, request: MigrateRequest) -> MigrationStatus:
        """Begin moving ``key`` to the offer's node; returns at once (poll :meth:`get`)."""
        if request.offer.fingerprint == self.listener().identity.fingerprint:
            raise UsageError("the offer is this node's own; move the instance to another node")
        instance = self.node.manager.get(key)
        if request.downtime_limit_ms is None:
            request = request.model_copy(update={"downtime_limit_ms": self.downtime_limit_ms})
        migration = secrets.token_hex(16)
        move = OutgoingMove(
            self.node.manager,
            self.spool,
            self.node_name,
            migration,
            instance,
            request,
            after_removal=self._sync_on_demand,
        )
        thread = threading.Thread(target=move.run, name=f"ukedge-migrate-{migration[:8]}")
        with self._guard:
            busy = [
                m
                for m in self._moves.values()
                if m.status.instance_id == instance.id and not m.status.step.final
            ]
            if busy:
                raise MigrationError(
                    f"instance {instance.name} is already moving ({busy[0].status.id})", "prepare"
                )
            self._moves[migration] = move
            self._threads[migration] = thread
            self._trim()
        thread.start()
        return move.status

    def recover(self) -> list[str]:
        """At agent start: give back what moves of a killed agent left paused or stopped."""
        return self.node.manager.recover_moves()

    def _sync_on_demand(self) -> None:
        if self.node.on_demand is not None:
            self.node.on_demand.sync()

    def _trim(self) -> None:
        finished = [k for k, m in self._moves.items() if m.status.step.final]
        for key in finished[: max(0, len(self._moves) - _KEPT)]:
            del self._moves[key]
            self._threads.pop(key, None)

    def _find(self, migration: str) -> OutgoingMove:
        with self._guard:
            matches = [m for k, m in self._moves.items() if k.startswith(migration)]
        if len(matches) != 1:
            raise MigrationError(
                f"no migration {migration!r} on this node"
                if not matches
                else f"migration id {migration!r} is ambiguous; give more of it"
            )
        return matches[0]

    def get(self, migration: str) -> MigrationStatus:
        return self._find(migration).status

    def list(self) -> list[MigrationStatus]:
        with self._guard:
            return [m.status for m in self._moves.values()]

    def wait(self, migration: str, timeout: float) -> MigrationStatus:
        move = self._find(migration)
        thread = self._threads.get(move.status.id)
        if thread is not None:
            thread.join(timeout)
        return move.status

    def cancel(self, migration: str) -> MigrationStatus:
        """Ask a move to stop; it gives the source back at its next step (or refuses when the
        target has already committed)."""
        move = self._find(migration)
        if not move.state.cancellable:
            raise MigrationError(
                f"migration {move.status.id} is {move.status.step.value}; it can no longer be "
                "cancelled",
                move.status.step.value,
            )
        move.cancel_requested.set()
        return move.status

    def close(self, timeout: float = 30.0) -> None:
        """Cancel what moves out and stop taking moves in."""
        with self._guard:
            moves = list(self._moves.values())
            threads = list(self._threads.values())
        for move in moves:
            if move.state.cancellable:
                move.cancel_requested.set()
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()


class LinkMoves:
    """The migration service as the controller link drives it (``MoveDriver``): offers reachable
    at the node's migration host, moves started as ``POST /v1/instances/{key}/migrate`` starts
    them, with the controller's ports kept where the target has them free."""

    def __init__(self, migrations: Migrations, host: str) -> None:
        self.migrations = migrations
        self.host = host

    def offer(self) -> dict[str, object]:
        return self.migrations.offer(self.host).model_dump(mode="json")

    def start(self, order: MoveOrder, ports: list[PortMapping]) -> str:
        try:
            offer = MigrationOffer.model_validate(order.offer)
        except ValueError as exc:
            raise MigrationError(f"the controller's offer is malformed: {exc}", "prepare") from None
        request = MigrateRequest(
            offer=offer,
            mode=Mode(order.mode),
            ports=ports,
            free_ports=True,
            postcopy=order.postcopy and order.mode == "live",
        )
        return self.migrations.start(order.instance, request).id

    def cancel(self, migration: str) -> None:
        try:
            self.migrations.cancel(migration)
        except MigrationError as exc:  # ended, or committed: its report says how it ended
            log.info("move %s not cancelled: %s", migration, exc)

    def progress(self, migration: str) -> MoveProgress | None:
        try:
            status = self.migrations.get(migration)
        except MigrationError:
            return None
        if not status.step.final:
            return MoveProgress("running", status.step.value)
        if status.step == Step.DONE:  # a failure after the commit is the source's clean-up
            return MoveProgress("done", status.step.value, status.error)
        failed = (status.failed_step or status.step).value
        return MoveProgress("failed", failed, f"{status.step.value} at {failed}: {status.error}")
