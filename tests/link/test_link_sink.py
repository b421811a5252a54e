"""The controller sink's and client's own logic: what a batch becomes on the wire, how the
controller's ``stored_through`` maps to the seq confirmed, and how failures map to
SinkUnavailable. httpx's MockTransport stands in for the network here (logic only); the sink
against a real controller, with the shared conformance suite, is in ``test_link_e2e.py``."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conformance.sinks import make_records
from kit.pins import self_signed_cert
from ukedge.errors import LinkError, LinkUnavailable, UsageError
from ukedge.host.link import ControllerSink, LinkClient, ResultBatch, ResultEntry
from ukedge.host.results.sinks import ResultRecord, ResultSink, SinkError, SinkUnavailable

Handler = Callable[[httpx.Request], httpx.Response]

_BATCH = ResultBatch(instance="x", records=[ResultEntry(seq=1, ts=1.0, line="1")])


@pytest.fixture
def pem(tmp_path: Path) -> str:
    return self_signed_cert(tmp_path, "controller")[2]


def _sink(pem: str, handler: Handler) -> ControllerSink:
    client = LinkClient(
        "https://ctl:7700", pem, "node-7", "cred-7", transport=httpx.MockTransport(handler)
    )
    return ControllerSink(client, lambda iid: "web" if iid == "a1" else None)


def _stored(through: int, seen: list[httpx.Request] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(200, json={"stored_through": through})

    return handler


def test_a_batch_on_the_wire(pem: str) -> None:
    seen: list[httpx.Request] = []
    sink = _sink(pem, _stored(2, seen))
    assert isinstance(sink, ResultSink) and sink.name == "controller"
    batch = [
        ResultRecord("a1", "edge-1", 1, 10.5, '{"t": 1}'),
        ResultRecord("a1", "edge-1", 2, 11.0, "{oops", "invalid JSON"),
    ]
    assert sink.deliver(batch) == 2
    [request] = seen
    assert request.url.path == "/v1/nodes/node-7/results"
    assert request.headers["authorization"] == "Bearer cred-7"
    assert json.loads(request.content) == {
        "instance": "a1",
        "deployment": "web",
        "records": [
            {"seq": 1, "ts": 10.5, "line": '{"t": 1}', "error": None},
            {"seq": 2, "ts": 11.0, "line": "{oops", "error": "invalid JSON"},
        ],
    }


@pytest.mark.parametrize(
    ("seqs", "through", "confirmed"),
    [
        ([1, 2, 3, 4, 5], 5, 5),
        ([1, 2, 3, 4, 5], 3, 3),
        ([1, 2, 3, 4, 5], 9, 5),  # stored more earlier (a redelivery): all of these are
        ([2, 4, 6], 5, 4),  # gaps: the last record of the batch at or below it
    ],
)
def test_stored_through_maps_to_a_seq_of_the_batch(
    pem: str, seqs: list[int], through: int, confirmed: int
) -> None:
    batch = [ResultRecord("b2", "edge-1", s, 1.0, "1") for s in seqs]
    assert _sink(pem, _stored(through)).deliver(batch) == confirmed


def test_nothing_stored_is_unavailable(pem: str) -> None:
    with pytest.raises(SinkUnavailable, match="stored none of seq 3-4"):
        _sink(pem, _stored(2)).deliver(make_records("c3", 3, 2))


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(503, json={"detail": "leader moving"}), "HTTP 503 leader moving"),
        (httpx.Response(401, json={"detail": "unknown credential"}), "unknown credential"),
        (httpx.Response(200, json={"stored": 1}), "without an integer stored_through"),
        (httpx.Response(200, text="<html>"), "not JSON"),
    ],
)
def test_failures_are_unavailable_naming_the_cause(
    pem: str, response: httpx.Response, message: str
) -> None:
    sink = _sink(pem, lambda _request: response)
    with pytest.raises(SinkUnavailable, match=message):
        sink.deliver(make_records("d4", 1, 1))


def test_malformed_batches_and_a_closed_sink_are_refused(pem: str) -> None:
    sink = _sink(pem, _stored(1))
    with pytest.raises(UsageError):
        sink.deliver([])
    with pytest.raises(UsageError):
        sink.deliver([*make_records("e5", 2, 1), *make_records("e5", 1, 1)])
    sink.close()
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.deliver(make_records("e5", 1, 1))


def test_an_unreachable_controller_is_unavailable(pem: str) -> None:
    """A real connection to a port nobody listens on."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    client = LinkClient(f"https://127.0.0.1:{port}", pem, "n", "c", timeout=5)
    sink = ControllerSink(LinkClient(f"https://127.0.0.1:{port}", pem, "n", "c", timeout=5))
    try:
        with pytest.raises(LinkUnavailable, match="unreachable"):
            client.post_results(_BATCH)
        with pytest.raises(SinkUnavailable, match="unreachable"):
            sink.deliver(make_records("f6", 1, 1))
    finally:
        client.close()
        sink.close()


def test_a_refusal_is_a_link_error_with_the_status(pem: str) -> None:
    client = LinkClient(
        "https://ctl:7700",
        pem,
        "n",
        "c",
        transport=httpx.MockTransport(
            lambda _r: httpx.Response(404, json={"detail": "no such node n"})
        ),
    )
    with pytest.raises(LinkError, match="refused a results batch: HTTP 404 no such node n") as e:
        client.post_results(_BATCH)
    assert e.value.status == 404
    assert not isinstance(e.value, LinkUnavailable)
