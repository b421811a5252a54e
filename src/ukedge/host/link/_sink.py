"""Results to the controller: a :class:`~ukedge.host.results.sinks.ResultSink` over the link.

Each batch (one instance's records) is one POST of a :class:`ResultBatch` to the node's results
route with its credential; the controller stores records idempotently by (node, instance, seq)
and answers how far it stored them (``stored_through``), which is what :meth:`deliver` returns.
``instance`` is the instance id (stable for the instance's life, and a replacement gets a new
one, so its records, numbered from 1 again, never collide with its predecessor's); the batch
names the instance's deployment so the controller can file the records without a lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ukedge.errors import LinkError, LinkUnavailable
from ukedge.host.link._client import LinkClient
from ukedge.host.link._wire import ResultBatch, ResultEntry
from ukedge.host.results.sinks import ResultRecord, SinkError, SinkUnavailable, check_batch

__all__ = ["CONTROLLER_SINK", "ControllerSink"]

#: The sink's name, and its delivery cursor's in the spool.
CONTROLLER_SINK = "controller"


class ControllerSink:
    """Delivers result batches to the controller the node is enrolled with."""

    def __init__(
        self,
        client: LinkClient,
        deployment_of: Callable[[str], str | None] = lambda _instance_id: None,
        *,
        name: str = CONTROLLER_SINK,
    ) -> None:
        self.name = name
        self._client = client
        self._deployment_of = deployment_of
        self._closed = False

    def deliver(self, batch: Sequence[ResultRecord]) -> int:
        if self._closed:
            raise SinkError(self.name, "the sink is closed")
        check_batch(self.name, batch)
        instance_id = batch[0].instance_id
        body = ResultBatch(
            instance=instance_id,
            deployment=self._deployment_of(instance_id),
            records=[ResultEntry(seq=r.seq, ts=r.ts, line=r.line, error=r.error) for r in batch],
        )
        try:
            stored = self._client.post_results(body)
        except LinkUnavailable as exc:
            raise SinkUnavailable(self.name, str(exc)) from exc
        except LinkError as exc:
            # A refusal (credential revoked, a batch the controller will not take) cannot be
            # retried into success at once; the forwarder backs off and tries again.
            raise SinkUnavailable(self.name, str(exc)) from exc
        confirmed = [r.seq for r in batch if r.seq <= stored]
        if not confirmed:
            raise SinkUnavailable(
                self.name, f"the controller stored none of seq {batch[0].seq}-{batch[-1].seq}"
            )
        return confirmed[-1]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
