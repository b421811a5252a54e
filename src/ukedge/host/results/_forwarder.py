"""The results forwarder: tails every instance's results file into the spool, and delivers what
each sink has not acked yet, retrying a sink that is down with back-off.

One thread does both, in rounds (:meth:`ResultForwarder.run_once`). A round that found nothing
to do is followed by a pause of ``interval`` (never less than 50 ms), so an idle agent does not
spin; a round that delivered a full batch is followed at once by the next. Sinks are independent:
each has its own cursor in the spool and its own back-off, so a broker that is down delays only
itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ukedge.errors import UkedgeError, UsageError
from ukedge.faults import crash_point
from ukedge.host.results._spool import ResultSpool
from ukedge.host.results.sinks import ResultRecord, ResultSink, SinkUnavailable

if TYPE_CHECKING:
    from ukedge.host.instances import InstanceManager

__all__ = ["ForwardRound", "ResultForwarder", "ResultSource", "manager_sources"]

log = logging.getLogger(__name__)

_MIN_INTERVAL = 0.05
_PRUNE_EVERY_S = 10.0


@dataclass(frozen=True)
class ResultSource:
    """One instance's results file to tail."""

    instance_id: str
    path: Path


def manager_sources(manager: InstanceManager) -> Callable[[], list[ResultSource]]:
    """Every instance the manager knows, active or ended: an ended instance's last lines are
    still read. Uses the stored records only (no hypervisor queries), so it is cheap per round."""

    def sources() -> list[ResultSource]:
        return [
            ResultSource(instance.id, manager.results_path(instance))
            for instance in manager.records.all()
        ]

    return sources


@dataclass
class ForwardRound:
    """What one :meth:`ResultForwarder.run_once` did."""

    ingested: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    #: A sink had at least a whole batch for some instance: more may be waiting.
    more: bool = False


@dataclass
class _Backoff:
    delay: float = 0.0
    until: float = 0.0


class ResultForwarder:
    """Moves results from instances' files through the spool to every sink."""

    def __init__(
        self,
        spool: ResultSpool,
        sinks: Sequence[ResultSink],
        sources: Callable[[], Iterable[ResultSource]],
        node: str,
        *,
        interval: float = 0.2,
        batch: int = 256,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise UsageError(f"result sink names must be unique, got {names}")
        if batch < 1:
            raise UsageError(f"batch must be at least 1, got {batch}")
        self.spool = spool
        self.sinks = list(sinks)
        self.sources = sources
        self.node = node
        self.interval = max(interval, _MIN_INTERVAL)
        self.batch = batch
        self.retry_min = retry_min
        self.retry_max = max(retry_max, retry_min)
        self._backoff = {name: _Backoff() for name in names}
        self._last_prune = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for stale in sorted(set(spool.sinks()) - set(names)):
            # A sink of an earlier configuration: records would wait for it for ever.
            log.warning(
                "result sink %s is no longer configured; records it had not received are not "
                "kept for it any more",
                stale,
            )
            spool.remove_sink(stale)
        for sink in self.sinks:
            spool.add_sink(sink.name)

    # -- one round ---------------------------------------------------------------------------------

    def ingest(self) -> int:
        """Read what is new in every source's results file into the spool."""
        added = 0
        for source in self.sources():
            try:
                added += self.spool.ingest_file(source.instance_id, self.node, source.path)
            except OSError as exc:
                log.warning("cannot read results of instance %s: %s", source.instance_id, exc)
            crash_point("host.spool.after_ingest")
        return added

    def deliver(self, sink: ResultSink, *, now: float | None = None) -> tuple[int, bool]:
        """Offer ``sink`` its pending records; returns (records acked, whether more may wait).

        Raises :class:`SinkUnavailable` (after recording the back-off) when the sink took none.
        """
        now = time.monotonic() if now is None else now
        backoff = self._backoff[sink.name]
        if now < backoff.until:
            return 0, False
        pending = self.spool.pending(sink.name, self.batch)
        by_instance: dict[str, list[ResultRecord]] = {}
        for record in pending:
            by_instance.setdefault(record.instance_id, []).append(record)
        acked = 0
        more = False
        for instance_id, records in by_instance.items():
            try:
                up_to = sink.deliver(records)
            except SinkUnavailable as exc:
                self._back_off(sink.name)
                log.info("%s; retrying in %.1f s", exc, backoff.delay)
                raise
            # A crash here (sent, not yet marked delivered) resends the batch after a restart:
            # delivery is at least once, and a consumer drops a repeated (instance, seq).
            crash_point("host.spool.after_send")
            self.spool.ack(sink.name, instance_id, up_to)
            crash_point("host.spool.after_ack")
            acked += sum(1 for r in records if r.seq <= up_to)
            more = more or len(records) >= self.batch or up_to < records[-1].seq
        backoff.delay = 0.0
        backoff.until = 0.0
        return acked, more

    def _back_off(self, name: str) -> None:
        backoff = self._backoff[name]
        backoff.delay = min(self.retry_max, max(self.retry_min, backoff.delay * 2))
        backoff.until = time.monotonic() + backoff.delay

    def run_once(self) -> ForwardRound:
        """Tail every source once, then offer each sink (not in back-off) what it lacks."""
        result = ForwardRound(ingested=self.ingest())
        for sink in self.sinks:
            try:
                acked, more = self.deliver(sink)
            except SinkUnavailable:
                result.unavailable.append(sink.name)
                continue
            except Exception:
                # A broken sink must not stop the others: treat it as down, with back-off.
                log.exception("result sink %r failed", sink.name)
                self._back_off(sink.name)
                result.unavailable.append(sink.name)
                continue
            result.delivered[sink.name] = acked
            result.more = result.more or more
        now = time.monotonic()
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self._last_prune = now
            self.spool.prune()
            self.spool.forget_delivered({source.instance_id for source in self.sources()})
        return result

    def drain(self, instance_id: str, path: Path) -> int:
        """Read the rest of one instance's results file now (before its directory is removed)."""
        return self.spool.ingest_file(instance_id, self.node, path)

    # -- the thread --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise UsageError("the results forwarder is already running; stop() it first")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ukedge-results", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread after its current round (sinks stay open; close them yourself)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("results forwarder did not stop within %.1f s", timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once().more
            except UkedgeError as exc:
                log.error("results forwarding round failed: %s", exc)
                busy = False
            except Exception:
                log.exception("results forwarding round failed")
                busy = False
            if not busy:
                self._stop.wait(self.interval)

    def __enter__(self) -> ResultForwarder:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
