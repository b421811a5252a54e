"""Fan-out of instance events to whoever follows them (the agent's SSE stream, tests).

The manager calls :meth:`EventBus.publish` from whichever thread changed a record; each
subscriber has its own bounded queue, so a slow reader loses its oldest events (and is told how
many) instead of slowing the manager or growing without bound.
"""

from __future__ import annotations

import logging
import queue
import threading
from types import TracebackType

from ukedge.host._models import InstanceEvent

__all__ = ["EventBus", "Subscription"]

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: queue.Queue[InstanceEvent] = queue.Queue(maxsize)
        #: Events dropped because this subscriber fell behind.
        self.dropped = 0

    def _offer(self, event: InstanceEvent) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> InstanceEvent | None:
        """The next event, or ``None`` when none came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        subscription = Subscription(self, maxsize)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def publish(self, event: InstanceEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription._offer(event)
        log.info(
            "instance %s %s: %s",
            event.name,
            event.action,
            event.state.value,
            extra={"instance": event.id, "action": event.action, "state": event.state.value},
        )

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)
