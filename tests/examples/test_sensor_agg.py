"""The sensor-agg example without a VM: its aggregation logic, its routes, and the real service
as the plain host process the benchmark compares against (HTTP/1.1 over real sockets)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "examples" / "sensor-agg"
sys.path.insert(0, str(APP))

from sensoragg.aggregate import Aggregator, ReadingError, parse_readings  # noqa: E402
from sensoragg.http import Request  # noqa: E402
from sensoragg.lean import dumps, loads  # noqa: E402
from sensoragg.results import ResultsSink  # noqa: E402
from sensoragg.service import Service  # noqa: E402

# -- JSON from the C core --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"sensor": "t1", "value": 21.5}',
        ' [ {"sensor":"a","value":-1e3,"ts":1700000000.25}, {"sensor":"\\u00e9\\n","value":0} ] ',
        '"plain"',
        "[true, false, null, 1, 2.0, [], {}]",
        '{"nested": {"deep": [1, [2, [3]]]}, "big": 123456789012345678901234567890}',
    ],
)
def test_lean_json_matches_the_json_module(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)
    value = json.loads(text)
    assert dumps(value) == json.dumps(value, separators=(",", ":"), sort_keys=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expecting a value at character 0"),
        ("  {", "Expecting property name"),
        ('{"a": 1} x', "extra data after the document at character 8"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('["unterminated]', "Unterminated string"),
        (b"\xff", "utf-8"),
    ],
)
def test_lean_json_errors(text: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loads(text)


# -- validation ----------------------------------------------------------------------------------


def test_one_reading_and_a_list() -> None:
    [one] = parse_readings({"sensor": "t1", "value": 21.5}, now=100.0)
    assert (one.sensor, one.value, one.ts) == ("t1", 21.5, 100.0)
    many = parse_readings([{"sensor": "a", "value": 1, "ts": 50}, {"sensor": "b", "value": -2}], 9)
    assert [(r.sensor, r.value, r.ts) for r in many] == [("a", 1.0, 50.0), ("b", -2.0, 9.0)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "the list of readings is empty"),
        ("t1", "expected an object"),
        ({"value": 1}, "'sensor' must be a non-empty string"),
        ({"sensor": "", "value": 1}, "'sensor' must be a non-empty string"),
        ({"sensor": "x" * 65, "value": 1}, "longer than 64"),
        ({"sensor": "t1"}, "'value' is missing"),
        ({"sensor": "t1", "value": "21.5"}, "'value' must be a finite number"),
        ({"sensor": "t1", "value": True}, "'value' must be a finite number"),
        ({"sensor": "t1", "value": math.nan}, "'value' must be a finite number"),
        ({"sensor": "t1", "value": 1, "ts": -1}, "'ts' must be a non-negative number"),
        ({"sensor": "t1", "value": 1, "unit": "C"}, "unknown field 'unit'"),
        ([{"sensor": "a", "value": 1}, {"sensor": "b"}], "reading 1: 'value' is missing"),
    ],
)
def test_bad_readings_name_the_problem(doc: object, message: str) -> None:
    with pytest.raises(ReadingError, match=message):
        parse_readings(doc, now=0.0)


# -- aggregation ---------------------------------------------------------------------------------


def _add(agg: Aggregator, now: float, *items: tuple[str, float]) -> None:
    agg.add(parse_readings([{"sensor": s, "value": v} for s, v in items], now), now)


def test_sliding_window_statistics() -> None:
    agg = Aggregator(window=10)
    _add(agg, 100.0, ("t1", 20.0), ("t2", 5.0))
    _add(agg, 105.0, ("t1", 22.0), ("t1", 24.0))
    assert agg.stats(106.0) == {
        "t1": {"count": 3, "mean": 22.0, "min": 20.0, "max": 24.0},
        "t2": {"count": 1, "mean": 5.0, "min": 5.0, "max": 5.0},
    }
    assert agg.stats(112.0) == {"t1": {"count": 2, "mean": 23.0, "min": 22.0, "max": 24.0}}
    assert agg.stats(200.0) == {}


def test_closed_windows_are_summarised_once() -> None:
    agg = Aggregator(window=10)
    _add(agg, 101.0, ("t1", 1.0), ("t1", 3.0))
    _add(agg, 109.0, ("t2", 7.0))
    _add(agg, 111.0, ("t1", 5.0))
    assert agg.close_due(109.9) == []
    assert agg.next_close() == 110.0
    [summary] = agg.close_due(110.0)
    assert summary == {
        "window_start": 100.0,
        "window_end": 110.0,
        "sensors": {
            "t1": {"count": 2, "mean": 2.0, "min": 1.0, "max": 3.0},
            "t2": {"count": 1, "mean": 7.0, "min": 7.0, "max": 7.0},
        },
    }
    assert agg.close_due(115.0) == []
    [last] = agg.close_due(140.0)
    assert last["window_start"] == 110.0
    assert agg.close_due(150.0) == [], "windows without readings write nothing"
    assert agg.next_close() is None


def test_late_and_future_readings_are_refused() -> None:
    agg = Aggregator(window=10, max_skew=60)
    _add(agg, 101.0, ("t1", 1.0))
    agg.close_due(125.0)
    with pytest.raises(ReadingError, match="already closed"):
        agg.add(parse_readings({"sensor": "t1", "value": 2, "ts": 119.0}, 125.0), 125.0)
    with pytest.raises(ReadingError, match="in the future"):
        agg.add(parse_readings({"sensor": "t1", "value": 2, "ts": 200.0}, 125.0), 125.0)
    assert agg.accepted == 1
    agg.add(parse_readings({"sensor": "t1", "value": 2, "ts": 121.0}, 125.0), 125.0)
    assert agg.accepted == 2


def test_a_batch_is_all_or_nothing() -> None:
    agg = Aggregator(window=10)
    batch = parse_readings(
        [{"sensor": "a", "value": 1}, {"sensor": "a", "value": 2, "ts": 10_000}], 100.0
    )
    with pytest.raises(ReadingError, match="reading 1"):
        agg.add(batch, 100.0)
    assert agg.stats(100.0) == {} and agg.accepted == 0


def test_shutdown_closes_the_open_window_as_partial() -> None:
    agg = Aggregator(window=10)
    _add(agg, 101.0, ("t1", 4.0))
    [summary] = agg.close_due(103.0, everything=True)
    assert summary["partial"] is True
    assert summary["sensors"] == {"t1": {"count": 1, "mean": 4.0, "min": 4.0, "max": 4.0}}


# -- routes --------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _request(method: str, path: str, body: object = None) -> Request:
    raw = b"" if body is None else json.dumps(body).encode()
    return Request(method, path, "", "HTTP/1.1", {}, raw)


def test_routes(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    clock = _Clock(1000.0)
    sink = ResultsSink(device=str(tmp_path / "no-device"), fallback=str(results))
    assert sink.where == str(results)
    service = Service(Aggregator(10), sink, clock)
    ok = service.handle(_request("POST", "/readings", [{"sensor": "t1", "value": 2}]))
    assert (ok.status, json.loads(ok.body)) == (200, {"accepted": 1})
    stats = service.handle(_request("GET", "/stats/"))
    assert json.loads(stats.body) == {"t1": {"count": 1, "mean": 2.0, "min": 2.0, "max": 2.0}}
    bad = service.handle(Request("POST", "/readings", "", "HTTP/1.1", {}, b"{nope"))
    assert bad.status == 400 and "not valid JSON" in json.loads(bad.body)["error"]
    assert service.handle(_request("GET", "/readings")).status == 405
    assert service.handle(_request("DELETE", "/stats")).headers == {"Allow": "GET, HEAD"}
    assert service.handle(_request("GET", "/nope")).status == 404
    assert json.loads(service.handle(_request("GET", "/healthz")).body)["status"] == "ok"
    clock.now = 1010.5
    service.flush(clock.now)
    sink.close()
    [line] = results.read_text().splitlines()
    assert json.loads(line)["sensors"]["t1"]["count"] == 1


# -- the real service over real sockets ----------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[str]]]:
    results = tmp_path / "results.jsonl"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PORT": "0",
        "HOST": "127.0.0.1",
        "WINDOW_SECONDS": "1",
        "RESULTS_FILE": str(results),
    }
    proc = subprocess.Popen(
        [sys.executable, "-u", str(APP / "main.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on 127.0.0.1:" in line, line
    port = int(line.split("127.0.0.1:")[1].split()[0])
    yield port, results, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()


def _recv_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    buf[:] = rest[length:]
    return status, headers, rest[:length]


def test_keep_alive_and_pipelining(server: tuple[int, Path, subprocess.Popen[str]]) -> None:
    port, _, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buf = bytearray()
        body = b'{"sensor": "t1", "value": 21.5}'
        sock.sendall(
            b"POST /readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert _recv_response(sock, buf)[0] == 200
        # two pipelined requests on the same connection
        sock.sendall(
            b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        status, headers, payload = _recv_response(sock, buf)
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(payload)["t1"]["count"] == 1
        status, _, payload = _recv_response(sock, buf)
        assert json.loads(payload)["status"] == "ok"
        # chunked request body
        sock.sendall(
            b"POST /readings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"10\r\n" + b'[{"sensor":"t2",' + b"\r\n"
            b"b\r\n" + b'"value":3}]' + b"\r\n0\r\n\r\n"
        )
        status, _, payload = _recv_response(sock, buf)
        assert (status, json.loads(payload)) == (200, {"accepted": 1})
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, payload = _recv_response(sock, buf)
        assert headers["connection"] == "close"
        assert set(json.loads(payload)) == {"t1", "t2"}
        assert sock.recv(10) == b"", "server closes after Connection: close"


def test_expect_continue_and_http10(server: tuple[int, Path, subprocess.Popen[str]]) -> None:
    port, _, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = b'{"sensor": "t1", "value": 1}'
        sock.sendall(
            b"POST /readings HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert _recv_response(sock, bytearray())[0] == 200
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert _recv_response(sock, bytearray())[0] == 200
        assert sock.recv(10) == b"", "HTTP/1.0 without keep-alive closes"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /readings HTTP/1.1\r\nContent-Length: 5\r\n\r\n[1,2]", 400),
        (b"POST /readings HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /stats HTTP/2.0\r\n\r\n", 505),
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /stats HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"POST /readings HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /stats HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ],
)
def test_bad_requests(
    server: tuple[int, Path, subprocess.Popen[str]], request_bytes: bytes, status: int
) -> None:
    port, _, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes)
        got, _, payload = _recv_response(sock, bytearray())
        assert got == status
        assert "error" in json.loads(payload)


def test_windows_reach_the_results_file_and_sigterm_flushes(
    server: tuple[int, Path, subprocess.Popen[str]],
) -> None:
    port, results, proc = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = b'[{"sensor": "t1", "value": 1}, {"sensor": "t1", "value": 3}]'
        sock.sendall(b"POST /readings HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert _recv_response(sock, bytearray())[0] == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (results.exists() and results.read_text()):
        time.sleep(0.05)
    first = json.loads(results.read_text().splitlines()[0])
    assert first["sensors"]["t1"] == {"count": 2, "mean": 2.0, "min": 1.0, "max": 3.0}
    assert first["window_end"] - first["window_start"] == 1.0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = b'{"sensor": "t9", "value": 9}'
        sock.sendall(b"POST /readings HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert _recv_response(sock, bytearray())[0] == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert any("t9" in line["sensors"] for line in lines[1:])
