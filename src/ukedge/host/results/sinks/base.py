"""The result-sink contract: the one narrow interface every results destination implements.

The spool (``ukedge.host.ResultSpool``) owns durability and ordering; a sink only moves a batch
of one instance's records to somewhere else and says how far that worked. The forwarder keeps a
delivery cursor per sink, so a sink that is down holds back only itself, and it retries what a
sink did not confirm: delivery is at least once, a consumer may see a record twice (same
``instance`` and ``seq``) but never misses one. A new destination (the controller, a file, a
message queue) is a one-file job checked by the shared suite in ``tests/conformance/sinks.py``.

Errors::

    UkedgeError
     └── SinkError            a sink cannot be built or used (bad URL, closed sink)
          └── SinkUnavailable  the destination cannot take records now; retry later
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ukedge.errors import UkedgeError, UsageError

__all__ = ["ResultRecord", "ResultSink", "SinkError", "SinkUnavailable", "check_batch"]


class SinkError(UkedgeError):
    """A sink cannot be built or used; ``sink`` names it."""

    def __init__(self, sink: str, message: str) -> None:
        self.sink = sink
        super().__init__(f"result sink {sink!r}: {message}")


class SinkUnavailable(SinkError):
    """The destination cannot take records now (down, unreachable, too slow to confirm).

    Nothing of the batch counts as delivered; the forwarder keeps the records and retries with
    back-off.
    """


@dataclass(frozen=True)
class ResultRecord:
    """One line an app wrote to its results device, as the spool numbered it.

    ``seq`` counts from 1 per instance without gaps. ``ts`` is when the host read the line (the
    results device carries no clock of the guest's). A line that is not valid JSON is kept with
    its raw text in ``line`` and the parse error in ``error``, so nothing an app wrote vanishes.
    """

    instance_id: str
    node: str
    seq: int
    ts: float
    line: str
    error: str | None = None

    def envelope(self) -> str:
        """The record as one JSON object: metadata plus the app's value as it wrote it.

        ``{"instance": ID, "node": NODE, "seq": N, "ts": T, "result": <the line>}`` for a valid
        line (the line's text is spliced in verbatim, so numbers keep the app's spelling), and
        ``{..., "error": MESSAGE, "raw": TEXT}`` for an invalid one. The app's value is nested,
        not merged, so an app's own ``seq`` or ``ts`` keys never clash with ours.
        """
        head = json.dumps(
            {"instance": self.instance_id, "node": self.node, "seq": self.seq, "ts": self.ts},
            separators=(",", ":"),
        )[:-1]
        if self.error is None:
            return f'{head},"result":{self.line.strip()}}}'
        tail = json.dumps({"error": self.error, "raw": self.line}, separators=(",", ":"))
        return f"{head},{tail[1:]}"


def check_batch(sink: str, batch: Sequence[ResultRecord]) -> None:
    """Raise :class:`UsageError` unless ``batch`` is what :meth:`ResultSink.deliver` accepts."""
    if not batch:
        raise UsageError(f"result sink {sink!r}: deliver() needs at least one record")
    first = batch[0]
    previous = first.seq - 1
    for record in batch:
        if record.instance_id != first.instance_id:
            raise UsageError(
                f"result sink {sink!r}: a batch holds one instance's records; got "
                f"{first.instance_id} and {record.instance_id}"
            )
        if record.seq <= previous:
            raise UsageError(
                f"result sink {sink!r}: records must come in increasing seq order; "
                f"{record.seq} after {previous}"
            )
        previous = record.seq


@runtime_checkable
class ResultSink(Protocol):
    """A destination of result records, used by one forwarder thread at a time."""

    #: The stable name the spool keys this sink's delivery cursor by; it must stay the same
    #: across agent restarts or the sink starts over from what the spool still holds.
    name: str

    def deliver(self, batch: Sequence[ResultRecord]) -> int:
        """Send ``batch`` and return the ``seq`` up to which the destination confirmed it.

        ``batch`` is non-empty, holds records of one instance in increasing ``seq`` order (gaps
        are allowed: a sink may see a batch again after a partial delivery); anything else is a
        :class:`~ukedge.errors.UsageError`. The returned seq is that of a record of the batch,
        and every record up to it is confirmed (durably accepted by the destination, e.g. MQTT
        PUBACK); fewer than all means "retry the rest". Records may have been sent more than
        once, never fewer. When not even the first record could be confirmed, raise
        :class:`SinkUnavailable`; the sink must then recover by itself (reconnect) so that a
        later call can succeed. Must not block much longer than its own configured timeout.
        """
        ...

    def close(self) -> None:
        """Release connections and threads; idempotent. ``deliver`` afterwards raises
        :class:`SinkError`."""
        ...
