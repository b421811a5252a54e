"""What the example images must do when they run, as checks any instance manager is put
through: the x86_64 images in ``tests/host/test_manager.py``, the arm64 builds of the same
examples in ``tests/host/test_arm64_vm.py``. One copy, so both architectures keep one contract.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from kit.host import wait_http
from kit.net import free_port
from ukedge.host import Instance, InstanceManager, InstanceState, RunRequest, parse_port_mapping

__all__ = ["check_hello", "check_sensor_agg"]


def check_hello(manager: InstanceManager, *, timeout: float = 120) -> Instance:
    """hello-c: arguments, environment, exit status and one results line."""
    instance = manager.run(
        RunRequest(image="hello-c:1", args=["edge", "--exit=3"], env={"HELLO_GREETING": "Hi"})
    )
    final = manager.wait(instance.id, timeout=timeout)
    console = manager.console_path(final).read_text(errors="replace")
    assert final.state is InstanceState.EXITED, (final.error, console)
    assert final.exit_code == 3
    assert "Hi, edge!" in console
    results = manager.results_path(final).read_text().splitlines()
    assert results, "hello-c writes one JSON line to the results device"
    json.loads(results[-1])
    return final


def check_sensor_agg(manager: InstanceManager, *, timeout: float = 30) -> Instance:
    """sensor-agg: HTTP on a published port (network), its statistics, a closed window on the
    results device, and SIGTERM on stop (control port). ``timeout`` bounds each wait."""
    port = free_port()
    instance = manager.run(
        RunRequest(
            image="sensor-agg:1",
            ports=[parse_port_mapping(f"{port}:8080")],
            env={"WINDOW_SECONDS": "1"},
        )
    )
    base = f"http://127.0.0.1:{port}"
    assert wait_http(f"{base}/healthz", timeout=max(timeout, 60)).status_code == 200
    readings = [
        {"sensor": "t1", "value": 20.0},
        {"sensor": "t1", "value": 22.0},
        {"sensor": "h1", "value": 50},
    ]
    with httpx.Client(timeout=timeout) as client:
        assert client.post(f"{base}/readings", json=readings).status_code < 300
        stats = client.get(f"{base}/stats").json()
        assert stats["t1"]["count"] == 2
        assert stats["t1"]["mean"] == pytest.approx(21.0)
        assert stats["t1"]["min"] == 20.0 and stats["t1"]["max"] == 22.0
        bad = client.post(f"{base}/readings", json={"sensor": "t1"})
        assert bad.status_code == 400
        # A window closes after WINDOW_SECONDS; its summary reaches the host (results device).
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline and not lines:
            time.sleep(0.5)
            client.post(f"{base}/readings", json={"sensor": "t1", "value": 1.0})
            lines = manager.results_path(instance).read_text().splitlines()
        assert lines, "no closed window arrived on the results device"
        assert "t1" in json.loads(lines[0]).__repr__()
    assert manager.stats(instance.id).rss_bytes > 0
    stopped = manager.stop(instance.id, timeout=max(timeout, 20))
    assert stopped.state is InstanceState.EXITED
    assert stopped.exit_code in (0, 143), "SIGTERM reaches the app, which ends on its own"
    return stopped
