"""The server kit over real HTTP: a small app served by ``ukedge.server.run`` in its own
process, as the hub and the agent are, with the kit's metrics, access log and ``/healthz``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kit.net import free_port
from ukedge import __version__, server
from ukedge.errors import UsageError

_APP = """
import logging
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from ukedge import server, serverlog

serverlog.configure("json")
registry = CollectorRegistry()
metrics = server.HttpMetrics("demo", registry)
app = FastAPI()


@app.get("/items/{{key}}")
def item(key: str) -> dict[str, str]:
    return {{"key": key}}


app.add_middleware(
    server.MetricsMiddleware, metrics=metrics, access_log=logging.getLogger("ukedge.demo.access")
)
server.add_operations(app, registry, health=lambda: {{"extra": 1}})
server.run(app, [server.tcp_listener("127.0.0.1", {port})])
"""


@dataclass
class _Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def records(self) -> list[dict[str, object]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Served]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_APP.format(port=port))],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.05)
    try:
        yield _Served(url, process, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_healthz_metrics_and_access_log(served: _Served) -> None:
    health = httpx.get(f"{served.url}/healthz").json()
    assert health == {"status": "ok", "version": __version__, "extra": 1}
    for key in ("a", "b"):
        assert httpx.get(f"{served.url}/items/{key}").json() == {"key": key}
    assert httpx.post(f"{served.url}/items/a").status_code == 405
    assert httpx.get(f"{served.url}/nowhere/at/all").status_code == 404
    text = httpx.get(f"{served.url}/metrics").text
    assert 'demo_requests_total{method="GET",route="/items/{key}",status="200"} 2.0' in text
    assert 'demo_requests_total{method="GET",route="other",status="404"} 1.0' in text
    assert "_created" not in text  # no timestamp twin beside every counter and histogram
    assert 'demo_request_seconds_count{method="GET",route="/items/{key}"} 2.0' in text
    assert "demo_sent_bytes_total" in text and "demo_received_bytes_total" in text
    # The access log is written when a response ends; the scrape above came after these.
    access = [r for r in served.records() if r.get("logger") == "ukedge.demo.access"]
    items = [r for r in access if r["path"] == "/items/b"]
    assert items and items[0]["route"] == "/items/{key}" and items[0]["status"] == 200
    assert items[0]["method"] == "GET" and items[0]["client"] == "127.0.0.1"


def test_sigterm_stops_the_server_and_frees_the_port(served: _Served) -> None:
    served.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it.
    assert served.process.wait(60) in (0, -signal.SIGTERM)
    port = int(served.url.rsplit(":", 1)[1])
    server.tcp_listener("127.0.0.1", port).close()


def test_a_port_in_use_is_a_usage_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*in use"):
            server.tcp_listener("127.0.0.1", port)


@pytest.mark.parametrize("program", ["hub", "host"])
def test_both_servers_refuse_a_port_in_use_naming_it(program: str, tmp_path: Path) -> None:
    """The hub and the agent bind through the kit: a taken port is a clear error, exit 1."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
        "UKEDGE_HOME": str(tmp_path / "home"),
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "ukedge.cli.main", program, "serve"]
        argv += ["--addr", f"127.0.0.1:{port}", "--data", str(tmp_path / program)]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
