"""The result-sink conformance suite: every sink in ``ukedge.host.results.sinks`` must pass it.

A sink's test module subclasses :class:`ResultSinkSuite` and supplies two fixtures:

* ``peer``: a :class:`SinkPeer`, the real destination (an MQTT broker plus a subscriber, the
  controller…), running, with a way to read what arrived and to stop and start it;
* ``sink``: a fresh sink built with ``ukedge.host.results.sinks.create`` pointing at ``peer``,
  with a delivery timeout of a few seconds; the fixture closes it afterwards.

Sinks that need infrastructure this machine lacks skip in their fixtures, naming what they need.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import pytest

from ukedge.errors import UsageError
from ukedge.host.results.sinks import ResultRecord, ResultSink, SinkError, SinkUnavailable

#: How long a peer may take to show what a sink confirmed.
ARRIVAL_TIMEOUT = 15.0
#: How long a sink may take to notice its peer is back (reconnect back-off included).
RECOVERY_TIMEOUT = 40.0


class SinkPeer(Protocol):
    def received(self, instance_id: str, count: int, timeout: float) -> list[dict[str, Any]]:
        """Every envelope that arrived for ``instance_id``, in arrival order, once at least
        ``count`` did; fails the test if fewer arrived within ``timeout``."""
        ...

    def all_received(self, instance_id: str) -> list[dict[str, Any]]:
        """Every envelope that arrived so far for ``instance_id``, in arrival order."""
        ...

    def stop(self) -> None:
        """Make the destination unreachable (stop the server)."""
        ...

    def start(self) -> None:
        """Bring it back; returns once it accepts records and ``received`` will see them."""
        ...


def make_records(
    instance_id: str, start: int, count: int, *, node: str = "node-1", step: int = 1
) -> list[ResultRecord]:
    return [
        ResultRecord(
            instance_id, node, seq, 1_700_000_000.0 + seq, json.dumps({"n": seq, "x": [1.5, "é"]})
        )
        for seq in range(start, start + count * step, step)
    ]


def first_arrivals(seqs: list[int]) -> list[int]:
    """``seqs`` without repeats, each at its first arrival."""
    seen: set[int] = set()
    out = []
    for seq in seqs:
        if seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


def deliver_until_up(sink: ResultSink, batch: list[ResultRecord]) -> int:
    """Retry ``deliver`` as the forwarder would, until the sink is back or time is up."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while True:
        try:
            return sink.deliver(batch)
        except SinkUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class ResultSinkSuite:
    """The contract of :class:`ukedge.host.results.sinks.ResultSink`, checked against a peer."""

    def test_has_a_name(self, sink: ResultSink) -> None:
        assert isinstance(sink, ResultSink)
        assert isinstance(sink.name, str) and sink.name

    def test_delivers_a_batch_in_order_and_confirms_its_last_seq(
        self, sink: ResultSink, peer: SinkPeer
    ) -> None:
        batch = make_records("a1", 1, 50)
        assert deliver_until_up(sink, batch) == 50
        got = peer.received("a1", 50, ARRIVAL_TIMEOUT)
        assert [m["seq"] for m in got] == list(range(1, 51))

    def test_envelope_carries_metadata_and_the_apps_value(
        self, sink: ResultSink, peer: SinkPeer
    ) -> None:
        record = ResultRecord("b2", "edge-7", 3, 1_700_000_123.25, '{"temp": 21.5, "ok": true}')
        assert deliver_until_up(sink, [record]) == 3
        [msg] = peer.received("b2", 1, ARRIVAL_TIMEOUT)
        assert msg == {
            "instance": "b2",
            "node": "edge-7",
            "seq": 3,
            "ts": 1_700_000_123.25,
            "result": {"temp": 21.5, "ok": True},
        }

    def test_an_invalid_line_arrives_as_error_with_its_raw_text(
        self, sink: ResultSink, peer: SinkPeer
    ) -> None:
        record = ResultRecord("c3", "node-1", 1, 1.0, "{not json", "invalid JSON: boom")
        assert deliver_until_up(sink, [record]) == 1
        [msg] = peer.received("c3", 1, ARRIVAL_TIMEOUT)
        assert msg["error"] == "invalid JSON: boom"
        assert msg["raw"] == "{not json"
        assert "result" not in msg

    def test_accepts_gaps_and_redelivery(self, sink: ResultSink, peer: SinkPeer) -> None:
        """After a partial delivery the forwarder offers a batch again: at least once."""
        batch = make_records("d4", 5, 3, step=2)
        assert deliver_until_up(sink, batch) == 9
        assert sink.deliver(batch) == 9
        got = peer.received("d4", 6, ARRIVAL_TIMEOUT)
        assert [m["seq"] for m in got] == [5, 7, 9, 5, 7, 9]

    @pytest.mark.parametrize(
        "batch",
        [
            [],
            [*make_records("e5", 1, 1), *make_records("f6", 2, 1)],
            [*make_records("e5", 2, 1), *make_records("e5", 1, 1)],
            [*make_records("e5", 1, 1), *make_records("e5", 1, 1)],
        ],
        ids=["empty", "two-instances", "decreasing", "repeated"],
    )
    def test_refuses_a_malformed_batch(self, sink: ResultSink, batch: list[ResultRecord]) -> None:
        with pytest.raises(UsageError):
            sink.deliver(batch)

    def test_unavailable_while_the_peer_is_down_then_recovers(
        self, sink: ResultSink, peer: SinkPeer
    ) -> None:
        assert deliver_until_up(sink, make_records("g7", 1, 1)) == 1
        peer.received("g7", 1, ARRIVAL_TIMEOUT)
        peer.stop()
        try:
            started = time.monotonic()
            with pytest.raises(SinkUnavailable):
                # A peer that just died may still look connected for an attempt or two.
                for _ in range(50):
                    sink.deliver(make_records("g7", 2, 5))
                    time.sleep(0.2)
            assert time.monotonic() - started < 60
        finally:
            peer.start()
        assert deliver_until_up(sink, make_records("g7", 2, 5)) == 6
        seqs = [m["seq"] for m in peer.received("g7", 6, ARRIVAL_TIMEOUT)]
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while set(seqs) != set(range(1, 7)) and time.monotonic() < deadline:
            time.sleep(0.1)
            seqs = [m["seq"] for m in peer.all_received("g7")]
        # At least once: every record, first arrivals in seq order, duplicates allowed.
        assert set(seqs) == set(range(1, 7))
        assert first_arrivals(seqs) == [1, 2, 3, 4, 5, 6]

    def test_close_is_idempotent_and_final(self, sink: ResultSink) -> None:
        sink.close()
        sink.close()
        with pytest.raises(SinkError):
            sink.deliver(make_records("h8", 1, 1))
