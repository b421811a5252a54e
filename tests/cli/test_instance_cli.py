"""The instance commands as a user runs them: `ukedge` subprocesses against real VMs."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from kit.host import ukedge_cmd, wait_http
from kit.net import free_port

# Every test runs against the example store (cli_home), which is built with the kernel.
pytestmark = pytest.mark.kernel


def ukedge(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ukedge_cmd(), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.vm
def test_foreground_run_streams_console_and_exits_with_app_status(cli_home: Path) -> None:
    result = ukedge("run", "--rm", "-e", "HELLO_EXIT=3", "hello-c:1", "from", "cli")
    assert result.returncode == 3, result.stderr
    assert "Hello, from cli!" in result.stdout
    assert ukedge("ps", "-aq").stdout.strip() == "", "--rm removed the instance"
    assert ukedge("run", "hello-c:1").returncode == 0


@pytest.mark.vm
def test_a_node_runs_the_qemu_its_setting_names(
    cli_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``UKEDGE_QEMU`` (a slimmer build, docs/operations.md) is what every VM of the node runs;
    a wrong one fails the command, naming the setting, before anything is created."""
    debian = shutil.which("qemu-system-x86_64")
    assert debian is not None
    started = tmp_path / "started"
    wrapper = tmp_path / "bin" / "qemu-system-x86_64"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {started}\nexec {debian} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("UKEDGE_QEMU", str(wrapper))
    result = ukedge("run", "--rm", "-e", "HELLO_EXIT=3", "hello-c:1")
    assert result.returncode == 3, result.stderr
    # The VM ran the named QEMU (and so did the accelerator probe before it, if it ran).
    runs = started.read_text().splitlines()
    assert any("-kernel" in argv for argv in runs), runs

    monkeypatch.setenv("UKEDGE_QEMU", str(tmp_path / "no-such-qemu"))
    refused = ukedge("run", "hello-c:1")
    assert refused.returncode != 0
    assert "UKEDGE_QEMU=" in refused.stderr and "no executable file there" in refused.stderr
    monkeypatch.delenv("UKEDGE_QEMU")
    assert ukedge("ps", "-aq").stdout.strip() == "", "nothing was created"
    assert started.read_text().splitlines() == runs


@pytest.mark.vm
def test_detached_instance_outlives_the_cli(cli_home: Path) -> None:
    port = free_port()
    started = ukedge("run", "-d", "--name", "agg", "-p", f"{port}:8080", "sensor-agg:1")
    assert started.returncode == 0, started.stderr
    instance_id = started.stdout.strip()
    assert len(instance_id) == 32
    assert wait_http(f"http://127.0.0.1:{port}/healthz").status_code == 200
    httpx.post(f"http://127.0.0.1:{port}/readings", json={"sensor": "s", "value": 1.5})
    assert httpx.get(f"http://127.0.0.1:{port}/stats").json()["s"]["count"] == 1
    listed = json.loads(ukedge("ps", "--json").stdout)
    assert [(i["name"], i["state"]) for i in listed] == [("agg", "running")]
    # Daemonless: nobody runs its health check, and it says so instead of "starting" forever.
    assert "its health check is not run" in started.stderr
    assert listed[0]["health"] == "unchecked"
    assert "agg" in ukedge("ps").stdout and "(health unchecked)" in ukedge("ps").stdout
    inspected = json.loads(ukedge("inspect", "agg").stdout)
    assert inspected["id"] == instance_id
    assert inspected["ports"][0]["host_port"] == port
    stopped = ukedge("stop", "-t", "20", "agg")
    assert stopped.returncode == 0, stopped.stderr
    after = json.loads(ukedge("ps", "-a", "--json").stdout)
    assert after[0]["state"] == "exited"
    assert "Exited" in ukedge("ps", "-a").stdout
    assert ukedge("logs", "agg").returncode == 0
    assert ukedge("rm", "agg").returncode == 0
    assert ukedge("ps", "-aq").stdout.strip() == ""


@pytest.mark.vm
def test_logs_follow_ends_when_the_instance_ends(cli_home: Path) -> None:
    started = ukedge("run", "-d", "hello-c:1", "followed")
    instance_id = started.stdout.strip()
    # A follow that did not end with the instance runs into the subprocess timeout and fails.
    followed = ukedge("logs", "-f", instance_id[:12], timeout=120)
    assert followed.returncode == 0
    assert "Hello, followed!" in followed.stdout
    results = ukedge("logs", "--results", instance_id)
    assert json.loads(results.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "-p", "8080", "hello-c:1"], "invalid port mapping '8080'"),
        (["run", "-e", "NOEQUALS", "hello-c:1"], "invalid environment setting 'NOEQUALS'"),
        (["run", "-m", "lots", "hello-c:1"], "invalid size 'lots'"),
        (["run", "--name", "bad name!", "hello-c:1"], "invalid instance name"),
        (["run", "-d", "--rm", "hello-c:1"], "--rm with --detach needs a host agent"),
        (["run", "Bad/Ref", "x"], "invalid image reference"),
        (["run", "missing:1"], "no such image: missing:1"),
        (["stop", "ghost"], "no such instance: ghost"),
        (["logs", "ghost"], "no such instance: ghost"),
        (["rm", "ghost"], "no such instance: ghost"),
    ],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    cli_home: Path, args: list[str], message: str
) -> None:
    result = ukedge(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert ukedge("ps", "-aq").stdout.strip() == ""


@pytest.mark.vm
def test_ctrl_c_stops_the_app_gracefully_and_output_is_not_repeated(cli_home: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*ukedge_cmd(), "run", "--name", "fg", "-p", f"{port}:8080", "sensor-agg:1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "stopping (SIGTERM to the app" in stderr
    assert stdout.count("sensor-agg listening") == 1, stdout
    assert "ukedge-exit" not in stdout
    assert proc.returncode == 0, "the app ends cleanly on SIGTERM and its status is ours"
    assert json.loads(ukedge("ps", "-a", "--json").stdout)[0]["state"] == "exited"


@pytest.mark.vm
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_stops_like_ctrl_c_and_rm_still_applies(
    cli_home: Path, signum: signal.Signals
) -> None:
    """A `timeout`, a service stop or a closed terminal must not orphan the VM (issue 16.2)."""
    port = free_port()
    proc = subprocess.Popen(
        [*ukedge_cmd(), "run", "--rm", "--name", "fg", "-p", f"{port}:8080", "sensor-agg:1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"the app ended cleanly on SIGTERM: {stderr}"
    if signum == signal.SIGTERM:
        assert "stopping (SIGTERM to the app; SIGTERM again to kill)" in stderr
    assert ukedge("ps", "-aq").stdout.strip() == "", "--rm removed the stopped instance"


@pytest.mark.vm
def test_events_in_one_shell_show_what_another_shell_runs(cli_home: Path) -> None:
    """Daemonless `events` follows the node's journal, not only its own process (issue 16.3)."""
    follower = subprocess.Popen(
        [*ukedge_cmd(), "events", "--json"], stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout or []), daemon=True)
    reader.start()
    try:
        # Its position is taken once it has started, which this process cannot see, so its
        # first run may show only in part: run again until one whole run (one instance id from
        # its start to its removal) shows, within a generous ceiling.
        deadline = time.monotonic() + 300
        runs: dict[str, list[str]] = {}

        def whole() -> bool:
            runs.clear()
            for event in map(json.loads, list(lines)):
                if event["name"] == "ev":
                    runs.setdefault(event["id"], []).append(event["action"])
            return any("start" in a and "die" in a and a[-1] == "remove" for a in runs.values())

        while time.monotonic() < deadline and not whole():
            assert follower.poll() is None, f"`events` exited with {follower.returncode}"
            assert ukedge("run", "--rm", "--name", "ev", "hello-c:1").returncode == 0
            poll_until = time.monotonic() + 10
            while time.monotonic() < poll_until and not whole():
                time.sleep(0.1)
        assert whole(), runs
    finally:
        follower.terminate()
        follower.wait(timeout=30)
        reader.join(timeout=30)
        if follower.stdout:
            follower.stdout.close()
