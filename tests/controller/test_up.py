"""``ukedge up`` end to end: the one process with a controller, a hub and a local agent, driven
by the CLI as a user would (push to its hub, deploy, list the replicas, read the results), then
SIGTERM: the process ends, and with it the instances the controller deployed."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit.agent import AgentProcess, push_examples
from kit.host import ukedge_cmd
from kit.net import free_port
from ukedge.controller import UpInfo, UpSettings, up
from ukedge.errors import UsageError
from ukedge.image import ImageStore

#: Generous: under TCG a boot, a rollout and a results delivery each take seconds.
CEILING_S = 240.0


def _wait(condition: Callable[[], Any], what: str, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + CEILING_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ukedge up exited {proc.returncode}: {log.read_text()}"
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {CEILING_S:g} s; the log of up:\n{log.read_text()}")


def _qemu_of(data: Path) -> list[int]:
    """QEMU processes whose command line names a path under ``data``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu" in argv[0] and any(str(data).encode() in arg for arg in argv):
            found.append(int(entry.name))
    return found


def test_an_address_in_use_fails_the_start_before_anything_runs(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [free_port(), taken.getsockname()[1], free_port()]
    ready: list[UpInfo] = []
    settings = UpSettings(
        data_dir=tmp_path / "up",
        controller_addr=f"127.0.0.1:{ports[0]}",
        hub_addr=f"127.0.0.1:{ports[1]}",
        agent_addr=f"127.0.0.1:{ports[2]}",
    )
    try:
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{ports[1]}"):
            up(settings, on_ready=ready.append)
    finally:
        taken.close()
    assert ready == []
    assert not (tmp_path / "up").exists()  # no identity, database or enrolment made
    for port in (ports[0], ports[2]):  # the controller's port, bound first, was let go
        probe = socket.socket()
        probe.bind(("127.0.0.1", port))
        probe.close()


def test_exports_point_the_cli_at_what_up_runs(tmp_path: Path) -> None:
    info = UpInfo(
        controller_url="https://127.0.0.1:7700",
        hub="127.0.0.1:5000",
        agent_url="http://127.0.0.1:7600",
        agent_socket=tmp_path / "agent" / "agent.sock",
        node_name="n",
        controller_dir=tmp_path / "controller",
        default_files=True,
    )
    # The default directory and URL: the CLI finds the controller with nothing set.
    assert info.exports() == [f"export UKEDGE_HOST=unix://{tmp_path}/agent/agent.sock"]
    elsewhere = dataclasses.replace(info, default_files=False)
    assert elsewhere.exports()[:3] == [
        "export UKEDGE_CONTROLLER=https://127.0.0.1:7700",
        f"export UKEDGE_CONTROLLER_TOKEN=$(cat {tmp_path}/controller/admin.token)",
        f"export UKEDGE_CONTROLLER_CERT={tmp_path}/controller/tls.crt",
    ]


@pytest.fixture
def up_data(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "up"
    yield data
    AgentProcess(data / "agent", 0, [], tmp_path / "unused.log").kill_machines()


@pytest.mark.vm
def test_up_runs_a_fleet_of_one_and_sigterm_stops_it_all(
    tmp_path: Path, up_data: Path, example_store: Path
) -> None:
    controller_port, hub_port, agent_port, app_port = (free_port() for _ in range(4))
    hub = f"127.0.0.1:{hub_port}"
    out, log = tmp_path / "up.out", tmp_path / "up.log"
    with out.open("wb") as stdout, log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                *ukedge_cmd(),
                "up",
                "--data",
                str(up_data),
                "--name",
                "edge-up",
                "--addr-controller",
                f"127.0.0.1:{controller_port}",
                "--addr-hub",
                hub,
                "--addr-agent",
                f"127.0.0.1:{agent_port}",
            ],
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        _wait(lambda: "ready" in out.read_text(), "up printed that it is ready", proc, log)
        printed = out.read_text()
        controller = f"https://127.0.0.1:{controller_port}"
        assert f"export UKEDGE_CONTROLLER={controller}" in printed
        assert f"{up_data / 'controller' / 'tls.crt'}" in printed

        env = {
            **os.environ,
            "UKEDGE_CONTROLLER": controller,
            "UKEDGE_CONTROLLER_TOKEN": (up_data / "controller" / "admin.token").read_text().strip(),
            "UKEDGE_CONTROLLER_CERT": str(up_data / "controller" / "tls.crt"),
        }

        def cli(*args: str) -> str:
            done = subprocess.run(
                [*ukedge_cmd(), *args], env=env, capture_output=True, text=True, timeout=CEILING_S
            )
            assert done.returncode == 0, f"ukedge {' '.join(args)}: {done.stderr}"
            return done.stdout

        nodes = json.loads(cli("node", "ls", "--json"))
        assert [(n["name"], n["status"]) for n in nodes] == [("edge-up", "ready")]

        push_examples(ImageStore(example_store), hub, "sensor-agg:1")
        cli(
            "deploy",
            "web",
            "--image",
            f"{hub}/sensor-agg:1",
            "-e",
            "WINDOW_SECONDS=1",
            "-p",
            f"{app_port}:8080",
        )

        def running() -> list[dict[str, Any]]:
            replicas = json.loads(cli("replicas", "--deployment", "web", "--json"))
            return [r for r in replicas if r["state"] == "running"]

        [replica] = _wait(running, "the replica runs", proc, log)
        assert replica["node_name"] == "edge-up"
        assert _qemu_of(up_data)

        def post() -> bool:
            try:
                httpx.post(
                    f"http://127.0.0.1:{app_port}/readings",
                    json=[{"sensor": "t1", "value": 21.5}, {"sensor": "t1", "value": 22.5}],
                    timeout=5,
                ).raise_for_status()
            except httpx.HTTPError:
                return False
            return True

        _wait(post, "the replica took readings", proc, log)

        def results() -> list[dict[str, Any]]:
            post()  # a later reading closes the earlier window at once
            lines = cli("results", "--deployment", "web", "--json").splitlines()
            return [json.loads(line) for line in lines]

        records = _wait(results, "the replica's results reached the controller", proc, log)
        assert records[0]["deployment"] == "web"
        assert records[0]["node_name"] == "edge-up"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(CEILING_S) == 0, log.read_text()
        assert _qemu_of(up_data) == []
        assert not (up_data / "agent" / "agent.sock").exists()
        for port in (controller_port, hub_port, agent_port, app_port):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
