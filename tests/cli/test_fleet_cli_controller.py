"""The fleet commands end to end against the real controller served over HTTPS (SQLite), a real
hub for the images it pins, and nodes that speak the link as the agent does (kit.controller).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import kit.controller as kit_controller
from kit.hub import RunningHub, hub, hub_factory, push_image
from kit.net import free_port
from ukedge.cli._app import app
from ukedge.controller import ControllerClient, ControllerConfig
from ukedge.host.link import ENROL_PATH, EnrolReply, InstanceReport, JoinToken, pinned_context

__all__ = ["hub", "hub_factory"]

_UKEDGE = (sys.executable, "-m", "ukedge.cli.main")


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    controller = kit_controller.make_controller(tmp_path / "controller")
    try:
        with kit_controller.running_controller(controller) as served:
            identity = controller.identity
            monkeypatch.setenv("UKEDGE_CONTROLLER", served.url)
            monkeypatch.setenv("UKEDGE_CONTROLLER_TOKEN", identity.admin_token)
            monkeypatch.setenv("UKEDGE_CONTROLLER_CERT", str(identity.cert_path))
            yield served
    finally:
        controller.close()


def ukedge(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.fixture
def link(running: Any) -> Iterator[httpx.Client]:
    """The nodes' side of the connection: no admin token, the controller's certificate pinned."""
    verify = pinned_context(running.controller.identity.cert_pem)
    with httpx.Client(base_url=running.url, verify=verify, timeout=30) as client:
        yield client


def _enrol(anon: httpx.Client, token: str, name: str) -> Any:
    """A node enrolled with the token the CLI printed, as the agent enrols."""
    body = {"token": JoinToken.parse(token).credential, "name": name, "architecture": "amd64"}
    reply = anon.post(ENROL_PATH, json=body)
    assert reply.status_code == 200, reply.text
    return kit_controller.Node(anon, name, EnrolReply.model_validate(reply.json()))


def test_token_enrol_list_label_cordon(link: httpx.Client) -> None:
    token = ukedge("controller", "token", "create", "--uses", "2", "--description", "site b")
    node = _enrol(link, token.strip(), "edge-1")
    node.beat()
    [listed] = json.loads(ukedge("node", "ls", "--json"))
    assert (listed["id"], listed["name"], listed["status"]) == (node.id, "edge-1", "ready")
    [info] = json.loads(ukedge("controller", "token", "ls", "--json"))
    assert (info["description"], info["uses_left"], info["nodes_enrolled"]) == ("site b", 1, 1)

    labelled = json.loads(ukedge("node", "label", "edge-1", "zone=b", "rack=7", "--json"))
    assert labelled[0]["labels"] == {"zone": "b", "rack": "7"}
    ukedge("node", "label", "edge-1", "rack-")
    assert ukedge("node", "cordon", "edge-1").strip() == "edge-1"
    inspected = json.loads(ukedge("node", "inspect", node.id))
    assert inspected["labels"] == {"zone": "b"} and inspected["cordoned"]
    table = ukedge("node", "ls")
    assert "Ready,Cordoned" in table and "zone=b" in table


def test_deploy_revisions_and_rollback(running: Any, hub: RunningHub) -> None:
    with hub.client() as client:
        push_image(client, "web", "1", [b"layer one"])
        push_image(client, "web", "2", [b"layer two"])
    image = f"{hub.host}/web"
    assert ukedge("deploy", "web", "--image", f"{image}:1", "--replicas", "2").strip() == (
        "web revision 1"
    )
    ukedge("deploy", "web", "--image", f"{image}:2", "--replicas", "2", "-e", "LEVEL=debug")
    [listed] = json.loads(ukedge("deployments", "ls", "--json"))
    assert (listed["revision"], listed["spec"]["env"]) == (2, {"LEVEL": "debug"})
    history = json.loads(ukedge("rollout", "history", "web", "--json"))
    assert [r["revision"] for r in history] == [1, 2]
    assert history[0]["image_digest"].startswith(f"{image}@sha256:")
    ukedge("rollout", "undo", "web", "--to-revision", "1")
    assert json.loads(ukedge("deployments", "inspect", "web"))["spec"]["image"] == f"{image}:1"
    assert ukedge("scale", "web", "3").startswith("web revision")
    assert json.loads(ukedge("deployments", "inspect", "web"))["spec"]["replicas"] == 3
    assert ukedge("deployments", "rm", "web").strip() == "web"
    assert json.loads(ukedge("deployments", "ls", "--json")) == []


def test_results_listed_and_streamed(link: httpx.Client) -> None:
    token = ukedge("controller", "token", "create").strip()
    node = _enrol(link, token, "edge-1")
    node.send_results("app-1", [{"seq": 1, "ts": 10.0, "line": '{"mean": 1}'}])
    [first] = [json.loads(line) for line in ukedge("results", "--json").splitlines()]
    assert (first["node_name"], first["instance"], first["result"]) == (
        "edge-1",
        "app-1",
        {"mean": 1},
    )

    config = ControllerConfig.resolve()
    seen: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        with ControllerClient(config) as client:
            for record in client.stream_results(after_id=first["id"], stop=stop):
                seen.append(record.seq)
                if len(seen) == 2:
                    stop.set()

    reader = threading.Thread(target=follow)
    reader.start()
    records = [{"seq": n, "ts": 10.0 + n, "line": f'{{"mean": {n}}}'} for n in (2, 3)]
    node.send_results("app-1", records)
    reader.join(60)
    assert not reader.is_alive()
    assert seen == [2, 3]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_local_controller_needs_no_setup(tmp_path: Path) -> None:
    """`ukedge controller serve` with defaults; the CLI on the same machine finds its token and
    certificate. The client's own UKEDGE_CONTROLLER_TOKEN in the environment is no server
    setting (the two share a prefix) and does not stop the server."""
    port = free_port()
    env = {**os.environ, "UKEDGE_HOME": str(tmp_path / "home")}
    env.pop("UKEDGE_CONTROLLER", None)
    env.pop("UKEDGE_CONTROLLER_CERT", None)
    log = tmp_path / "controller.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [*_UKEDGE, "controller", "serve", "--addr", f"127.0.0.1:{port}", "--grace", "30s"],
            env={**env, "UKEDGE_CONTROLLER_TOKEN": "not-a-setting"},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        # The port opens once the identity is made and the schema migrated.
        while not _listening(port):
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the controller did not start"
            time.sleep(0.2)
        env.pop("UKEDGE_CONTROLLER_TOKEN", None)
        done = subprocess.run(
            [*_UKEDGE, "--controller", url, "node", "ls", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == []
    finally:
        server.terminate()
        server.wait(60)


def test_moves_cancel(running: Any, link: httpx.Client, hub: RunningHub) -> None:
    """`ukedge moves cancel ID`: a move waiting for its offer ends at once, shown by `ukedge
    moves --all`; cancelling it again is refused with the controller's reason (exit 1)."""
    with hub.client() as client:
        push_image(client, "web", "1", [b"layer one"])
    ukedge("deploy", "web", "--image", f"{hub.host}/web:1", "--replicas", "1")
    token = ukedge("controller", "token", "create", "--uses", "2").strip()
    a = _enrol(link, token, "edge-a")
    a.beat(migration_host="10.0.0.1")
    loop = running.controller.make_loop()
    try:
        loop.run_once()
    finally:
        loop.leadership.release()
    reply = a.beat(migration_host="10.0.0.1")
    assert reply.desired is not None
    [placed] = reply.desired.instances
    report = {
        "name": placed.name,
        "deployment": placed.deployment,
        "replica": placed.replica,
        "revision": placed.revision,
        "image": placed.request.image,
        "state": "running",
        "health": "none",
    }
    a.beat([InstanceReport.model_validate(report)], migration_host="10.0.0.1")
    b = _enrol(link, token, "edge-b")
    b.beat(migration_host="10.0.0.2")
    admin = {"Authorization": f"Bearer {running.controller.identity.admin_token}"}
    r = link.post("/v1/moves", json={"instance": placed.name, "to": "edge-b"}, headers=admin)
    assert r.status_code == 201, r.text
    move = r.json()["id"]
    assert ukedge("moves", "cancel", move).strip() == f"move {move} of {placed.name}: cancelled"
    [listed] = json.loads(ukedge("moves", "--all", "--json"))
    assert (listed["state"], listed["error"]) == ("failed", "cancelled by the operator")
    assert "cancelled by the operator" in ukedge("moves", "--all")
    again = CliRunner().invoke(app, ["moves", "cancel", move])
    assert again.exit_code == 1 and "has ended" in str(again.exception), again.output


def test_drain_and_migrate_ask_for_postcopy(running: Any, link: httpx.Client) -> None:
    """`node drain --migrate --mode live --postcopy` records it (the drain's moves are ordered
    with it); --postcopy without a live move is refused before the controller is asked."""
    token = ukedge("controller", "token", "create").strip()
    _enrol(link, token, "edge-a").beat(migration_host="10.0.0.1")
    for args in (["--postcopy"], ["--migrate", "--postcopy"]):
        refused = CliRunner().invoke(app, ["node", "drain", "edge-a", *args])
        assert refused.exit_code != 0 and "--postcopy is for live moves" in str(refused.exception)
    refused = CliRunner().invoke(app, ["migrate", "web-x", "--to", "edge-b", "--postcopy"])
    assert refused.exit_code != 0 and "--postcopy is for --mode live" in str(refused.exception)
    drained = ukedge(
        "node", "drain", "edge-a", "--migrate", "--mode", "live", "--postcopy", "--json"
    )
    [record] = json.loads(drained)
    assert (record["drain_migrate"], record["drain_postcopy"]) == ("live", True)
