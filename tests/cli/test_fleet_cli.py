"""The fleet commands (node, deploy, deployments, rollout, replicas, results, controller token):
what their tables and JSON show, how their arguments parse, and the commands run against the
stand-in controller over real HTTPS (kit.fake_controller) — the flags reach the controller as the
spec they mean, a bad deployment file sends nothing, --wait follows a rollout to its end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kit.fake_controller import NODE, TOKEN, FakeController
from kit.tls import CertFiles, self_signed, serve_asgi
from ukedge.cli._app import app
from ukedge.cli.deployments import (
    render_deployments,
    render_replicas,
    render_revisions,
    rollout_line,
)
from ukedge.cli.nodes import label_changes, node_status, render_nodes
from ukedge.cli.results import result_line
from ukedge.controller import (
    Deployment,
    DeploymentSpec,
    NodeRecord,
    ReplicaRecord,
    ResultRecordOut,
    Revision,
    RolloutStatus,
)
from ukedge.errors import UsageError
from ukedge.ports import PortMapping


def _node(**changes: object) -> NodeRecord:
    return NodeRecord.model_validate({**NODE, **changes})


def _deployment(**rollout: object) -> Deployment:
    status = {"state": "progressing", "revision": 2, "desired": 3, "updated": 1, "ready": 1}
    return Deployment(
        name="sensor-agg",
        spec=DeploymentSpec(name="sensor-agg", image="hub.local:5000/sensor-agg:2", replicas=3),
        revision=2,
        rollout=RolloutStatus.model_validate({"unavailable": 0, **status, **rollout}),
        created_at=time.time() - 7200,
        updated_at=time.time() - 120,
    )


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, "Ready"),
        ({"status": "not-ready"}, "NotReady"),
        ({"cordoned": True}, "Ready,Cordoned"),
        ({"status": "not-ready", "cordoned": True, "draining": True}, "NotReady,Cordoned,Draining"),
    ],
)
def test_node_status_says_what_keeps_replicas_away(changes: dict[str, object], status: str) -> None:
    assert node_status(_node(**changes)) == status


def test_node_table_shows_allocation_of_capacity_and_heartbeat_age(
    capsys: pytest.CaptureFixture[str],
) -> None:
    render_nodes(
        [_node(last_heartbeat=time.time() - 3), _node(name="edge-2", last_heartbeat=None)],
        as_json=False,
    )
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "NAME", "NODE", "ID", "STATUS", "ARCH", "MEMORY", "(MiB)", "VCPUS", "INSTANCES",
        "HEARTBEAT", "LABELS",
    ]  # fmt: skip
    assert first.split() == [
        "edge-1", NODE["id"][:12], "Ready", "x86_64", "128/2048", "2/8", "2", "3", "seconds",
        "ago", "zone=a",
    ]  # fmt: skip
    assert second.split()[-2:] == ["never", "zone=a"]


def test_node_json_is_the_records(capsys: pytest.CaptureFixture[str]) -> None:
    render_nodes([_node()], as_json=True)
    assert json.loads(capsys.readouterr().out) == [NODE]


def test_label_changes_set_and_remove() -> None:
    assert label_changes(["zone=b", "gpu-", "note=a=b"]) == (
        {"zone": "b", "note": "a=b"},
        ["gpu"],
    )


@pytest.mark.parametrize(
    ("items", "message"),
    [(["zone"], "expected KEY=VALUE or KEY-"), (["-"], "expected"), (["a=1", "a-"], "both")],
)
def test_bad_label_changes_are_refused(items: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        label_changes(items)


def test_deployment_table_and_rollout_line(capsys: pytest.CaptureFixture[str]) -> None:
    render_deployments([_deployment()], as_json=False)
    _, row = capsys.readouterr().out.splitlines()
    assert row.split() == [
        "sensor-agg", "replicated", "hub.local:5000/sensor-agg:2", "2", "1/3", "progressing",
        "2", "minutes", "ago",
    ]  # fmt: skip
    rolled_back = _deployment(state="rolled-back", revision=1, message="health checks failed")
    assert rollout_line(rolled_back.rollout) == (
        "revision 1 rolled-back: 1/3 updated, 1 ready, 0 unavailable (health checks failed)"
    )


def test_revision_table_marks_the_current_one(capsys: pytest.CaptureFixture[str]) -> None:
    spec = _deployment().spec
    revisions = [
        Revision(deployment="sensor-agg", revision=n, image_digest=f"r@sha256:{n}", spec=spec,
                 created_at=0.0, platforms=["linux/amd64", "linux/arm64/v8"][:n])
        for n in (1, 2)
    ]  # fmt: skip
    render_revisions(revisions, 2, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["1", "r@sha256:1", "amd64", "3", "1970-01-01T00:00:00+00:00"]
    assert lines[2].split()[2] == "amd64,arm64/v8"
    assert lines[2].split()[-1] == "current"


def test_replica_table_prefers_what_the_node_reported(capsys: pytest.CaptureFixture[str]) -> None:
    replicas = [
        ReplicaRecord(deployment="web", replica="web-a1", revision=3, node_id="n1",
                      node_name="edge-1", instance="web-a1", state="placed",
                      instance_state="running", health="healthy",
                      ports=[PortMapping(host_port=18080, guest_port=8080)]),
        ReplicaRecord(deployment="web", replica="web-b2", revision=3, node_id=None,
                      node_name=None, instance=None, state="pending"),
    ]  # fmt: skip
    render_replicas(replicas, as_json=False)
    _, placed, pending = capsys.readouterr().out.splitlines()
    assert placed.split() == [
        "web", "web-a1", "3", "edge-1", "web-a1", "running", "healthy", "127.0.0.1:18080->8080"
    ]  # fmt: skip
    assert pending.split() == ["web", "web-b2", "3", "-", "-", "pending", "-", "-"]


def test_result_lines() -> None:
    base = {
        "id": 7, "node_id": "n1", "node_name": "edge-1", "deployment": "sensor-agg",
        "instance": "sensor-agg-1", "seq": 4, "ts": 0.25, "received_at": 1.0,
    }  # fmt: skip
    record = ResultRecordOut.model_validate({**base, "result": {"mean": 2.5}})
    assert result_line(record, as_json=False) == (
        '1970-01-01T00:00:00.250+00:00 sensor-agg edge-1/sensor-agg-1 #4 {"mean":2.5}'
    )
    failed = ResultRecordOut.model_validate({**base, "deployment": None, "error": "bad input"})
    assert result_line(failed, as_json=False).endswith(" edge-1/sensor-agg-1 #4 error: bad input")
    assert json.loads(result_line(record, as_json=True)) == record.model_dump(mode="json")


# -- against the stand-in controller --------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fake() -> FakeController:
    return FakeController()


@pytest.fixture
def url(fake: FakeController, certs: CertFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("UKEDGE_CONTROLLER_TOKEN", TOKEN)
    monkeypatch.setenv("UKEDGE_CONTROLLER_CERT", str(certs.cert))
    with serve_asgi(fake.app(), certs) as base:
        monkeypatch.setenv("UKEDGE_CONTROLLER", base)
        yield base


def test_node_ls_through_the_controller(url: str) -> None:
    result = CliRunner().invoke(app, ["node", "ls", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [NODE]


def test_the_controller_flag_wins_over_the_environment(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UKEDGE_CONTROLLER", "https://127.0.0.1:1")
    result = CliRunner().invoke(app, ["--controller", url, "node", "ls"])
    assert result.exit_code == 0, result.output
    assert "edge-1" in result.stdout


def test_deploy_flags_reach_the_controller_as_the_spec(url: str, fake: FakeController) -> None:
    args = ["deploy", "web", "--image", "web:2", "--replicas", "3", "-e", "A=1", "-p", "8080:80"]
    args += ["--selector", "zone=a", "--spread-by", "zone", "--autonomy", "10m", "-m", "64M"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "web revision 1"
    sent = DeploymentSpec.model_validate(fake.deployed[0])
    assert sent == DeploymentSpec.model_validate(
        {
            "name": "web",
            "image": "web:2",
            "replicas": 3,
            "memory_mib": 64,
            "env": {"A": "1"},
            "ports": [{"host_port": 8080, "guest_port": 80}],
            "placement": {"selector": {"zone": "a"}, "spread_by": "zone"},
            "autonomy_s": 600.0,
        }
    )


def test_deploy_wait_follows_the_rollout_to_its_end(url: str, fake: FakeController) -> None:
    fake.rollouts = [
        {"updated": 1, "ready": 0},
        {"updated": 2, "ready": 1},
        {"state": "complete", "updated": 2, "ready": 2},
    ]
    result = CliRunner().invoke(app, ["deploy", "web", "--image", "web:1", "--replicas", "2", "-w"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[-2] == "web revision 1 complete: 2/2 updated, 2 ready, 0 unavailable"
    assert lines[-1] == "web: revision 1 rolled out"
    assert "web revision 1 progressing: 2/2 updated, 1 ready, 0 unavailable" in lines


def test_token_create_prints_the_token_alone_on_stdout(url: str, fake: FakeController) -> None:
    args = ["controller", "token", "create", "--ttl", "1h", "--uses", "3", "--description", "b"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == "UKJ1." + "ab" * 32 + ".tok0001.secretsecretsecret\n"
    assert "3 use(s); shown once" in result.stderr
    assert f"ukedge host serve --controller {url} --join-token" in result.stderr
    assert fake.token_requests == [{"description": "b", "ttl_s": 3600.0, "uses": 3}]


def _ukedge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ukedge.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_deploy_wait_exits_1_when_the_rollout_rolls_back(url: str, fake: FakeController) -> None:
    fake.rollouts = [{"state": "rolled-back", "message": "replicas failed their health checks"}]
    done = _ukedge("deploy", "web", "--image", "web:1", "--wait", env={})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: web: the rollout did not complete: revision 1 rolled-back: 0/1 updated, 0 ready, "
        "0 unavailable (replicas failed their health checks)"
    )


def test_a_bad_deployment_file_sends_nothing(
    url: str, fake: FakeController, tmp_path: Path
) -> None:
    bad = tmp_path / "app.toml"
    bad.write_text('name = "web"\nimage = "web:1"\nreplicas = -2\n')
    done = _ukedge("deploy", "-f", str(bad), env={})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {bad}: replicas: Input should be greater than or equal to 0"
    )
    assert fake.deployed == []


def test_an_unreachable_controller_is_one_line_saying_how_to_start_one(
    certs: CertFiles, tmp_path: Path
) -> None:
    from kit.net import free_port

    env = {
        "UKEDGE_CONTROLLER": f"https://127.0.0.1:{free_port()}",
        "UKEDGE_CONTROLLER_TOKEN": TOKEN,
        "UKEDGE_CONTROLLER_CERT": str(certs.cert),
    }
    done = _ukedge("deployments", "ls", env=env)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the controller at {env['UKEDGE_CONTROLLER']}")
    assert "ukedge controller serve" in line
