"""The agent's side of the controller link: a heartbeat thread and a reconcile thread.

**Heartbeat.** Every ``heartbeat_interval_s`` (the controller may change it in any answer) the
node reports itself (:func:`build_heartbeat`). An answer carrying a desired state is saved to
disk first (:class:`DesiredStore`) and then handed to the reconcile thread. When the controller
cannot be reached the thread backs off (doubling, up to ``MAX_BACKOFF_S``) and logs once per
outage, not once per try; the node keeps running what it has.

**Reconcile.** A separate thread, so a slow image pull or boot never delays a heartbeat (which
would make the controller think the node is lost): it applies the saved desired state at once
when the link starts (offline autonomy: after a reboot the instances come back even while the
controller is unreachable), again whenever a new one arrives, and every interval anyway, so a
failed creation is retried and an instance removed by hand is made again. Failures are kept for
the next heartbeat; nothing a single instance does stops either thread.

**Moves.** A node given a migration service (:meth:`ControllerLink.take_part_in_moves`)
reports its ``migration_host``, answers the controller's offer requests and drives the moves it
is ordered to, and holds the replicas those moves concern from the reconciler
(:mod:`._movebook`).

Crashes: the desired state is on disk before anything acts on it, and each reconcile pass starts
from what the node has, so a crash at any point is finished by the next agent's first pass.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ukedge.errors import LinkError, LinkUnavailable
from ukedge.host._node import LocalNode
from ukedge.host.link._apply import Applier
from ukedge.host.link._client import LinkClient
from ukedge.host.link._desired import FILE_NAME as DESIRED_FILE
from ukedge.host.link._desired import DesiredStore
from ukedge.host.link._enrolment import Enrolment
from ukedge.host.link._movebook import FILE_NAME as MOVES_FILE
from ukedge.host.link._movebook import MoveBook, MoveDriver
from ukedge.host.link._report import build_heartbeat
from ukedge.host.link._wire import DesiredInstance, DesiredState, HeartbeatReply

__all__ = ["MAX_BACKOFF_S", "ControllerLink"]

log = logging.getLogger(__name__)

#: The longest pause between two tries while the controller is unreachable.
MAX_BACKOFF_S = 30.0
_MIN_INTERVAL_S = 0.1


class ControllerLink:
    """Heartbeats to the controller and runs the desired state its answers carry."""

    def __init__(
        self,
        node: LocalNode,
        enrolment: Enrolment,
        data_dir: Path,
        *,
        client: LinkClient | None = None,
        accelerator: str | None = None,
    ) -> None:
        self.node = node
        self.enrolment = enrolment
        self.client = client or LinkClient(
            enrolment.controller, enrolment.cert, enrolment.node_id, enrolment.credential
        )
        self.desired = DesiredStore(data_dir / DESIRED_FILE)
        self.applier = Applier(node)
        #: The controller's moves this node takes part in (held replicas survive restarts).
        self.moves = MoveBook(data_dir / MOVES_FILE)
        self._driver: MoveDriver | None = None
        #: Where other nodes reach this node's migration listener (None: no part in moves).
        self.migration_host: str | None = None
        self.interval = max(enrolment.heartbeat_interval_s, _MIN_INTERVAL_S)
        self._accelerator = accelerator
        # Told an accelerator (tests, a node that knows it): that of its own platform alone.
        self._accelerators: dict[str, str] | None = (
            {str(node.manager.platform): accelerator} if accelerator is not None else None
        )
        self._lock = threading.Lock()
        self._errors: dict[str, tuple[DesiredInstance | None, str]] = {}
        #: The generation the last finished reconcile pass applied (0: none yet).
        self.applied_generation = 0
        #: Whether the last heartbeat reached the controller.
        self.connected = False
        #: Heartbeats in a row that did not reach the controller (or were refused).
        self.failures = 0
        self._offline_since_logged = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: Set after every finished reconcile pass (tests wait on it).
        self.reconciled = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def errors(self) -> dict[str, tuple[DesiredInstance | None, str]]:
        """The last reconcile pass's failures by instance name (reported in heartbeats)."""
        with self._lock:
            return dict(self._errors)

    # -- heartbeat ---------------------------------------------------------------------------------

    @property
    def accelerator(self) -> str:
        if self._accelerator is None:
            from ukedge.vmm import probe_accelerator

            self._accelerator = probe_accelerator().accel
        return self._accelerator

    def take_part_in_moves(self, driver: MoveDriver, host: str) -> None:
        """Take part in the controller's moves: offers and moves out go through ``driver``,
        other nodes reach this one's migration listener at ``host``. Before :meth:`start`."""
        self._driver = driver
        self.migration_host = host

    @property
    def accelerators(self) -> dict[str, str]:
        """The accelerator of each platform the node can run (probed once)."""
        if self._accelerators is None:
            from ukedge.vmm import accelerators

            self._accelerators = dict(accelerators())
        return self._accelerators

    def heartbeat_once(self) -> HeartbeatReply:
        """Report once; save and hand on a desired state the answer carries; act on the moves
        it asks for. Raises :class:`LinkUnavailable` or :class:`LinkError`."""
        with self._lock:
            errors = dict(self._errors)
            applied = self.applied_generation
        driver = self._driver
        reports = self.moves.reports(driver, self._present) if driver is not None else []
        heartbeat = build_heartbeat(
            self.node,
            accelerator=self.accelerator,
            applied_generation=applied,
            errors=errors,
            migration_host=self.migration_host if driver is not None else None,
            offers=self.moves.offers() if driver is not None else (),
            move_reports=reports,
            accelerators=self.accelerators,
        )
        reply = self.client.heartbeat(heartbeat)
        if reply.desired is not None:
            self._receive(reply.desired)
        if driver is not None:
            self.moves.answered(
                reply,
                reported={r.move for r in reports if r.state != "running"},
                desired=self.desired.load,
                driver=driver,
            )
        self.interval = max(reply.heartbeat_interval_s, _MIN_INTERVAL_S)
        return reply

    def _present(self, name: str) -> bool:
        return any(i.name == name for i in self.node.list(all_instances=True))

    def _receive(self, desired: DesiredState) -> None:
        if self.desired.load() != desired:
            self.desired.save(desired)
            log.info("desired state %d received", desired.generation)
        self._wake.set()

    def _heartbeat_loop(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.heartbeat_once()
            except LinkUnavailable as exc:
                if not self._offline_since_logged:
                    log.warning(
                        "controller unreachable; running the last desired state and retrying "
                        "with back-off: %s",
                        exc,
                    )
                    self._offline_since_logged = True
                self.connected = False
                self.failures += 1
                delay = min(max(delay * 2, self.interval), MAX_BACKOFF_S)
                continue
            except LinkError as exc:
                # Refused (e.g. the node was removed there): as unreachable, but say why each
                # time the back-off is at its longest.
                if not self._offline_since_logged or delay >= MAX_BACKOFF_S:
                    log.error("controller refused the heartbeat: %s", exc)
                    self._offline_since_logged = True
                self.connected = False
                self.failures += 1
                delay = min(max(delay * 2, self.interval), MAX_BACKOFF_S)
                continue
            except Exception:
                log.exception("heartbeat failed")
                self.failures += 1
                delay = min(max(delay * 2, self.interval), MAX_BACKOFF_S)
                continue
            if self._offline_since_logged:
                log.info("controller %s reachable again", self.enrolment.controller)
                self._offline_since_logged = False
            self.connected = True
            self.failures = 0
            delay = self.interval

    # -- reconcile ---------------------------------------------------------------------------------

    def reconcile_once(self) -> None:
        """One pass over the saved desired state (nothing to do without one)."""
        desired = self.desired.load()
        if desired is None:
            return
        result = self.applier.apply(desired, lambda: self.moves.held(desired))
        self.moves.settle(desired)
        with self._lock:
            self._errors = result.errors
            self.applied_generation = desired.generation

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.reconcile_once()
            except Exception:
                log.exception("reconcile pass failed")
            self.reconciled.set()
            self._wake.wait(self.interval)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._reconcile_loop, name="ukedge-reconcile", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="ukedge-heartbeat", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop both threads (a reconcile pass in progress finishes first); instances run on."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.client.close()
