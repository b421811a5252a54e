"""Join tokens, enrolment, heartbeats and the operator's node commands, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kit.controller import Api
from ukedge.controller import Controller, ReplicaState, ReplicaView
from ukedge.controller._reconcile import apply_plan
from ukedge.host import HealthStatus, InstanceState
from ukedge.host.link import ENROL_PATH, HEARTBEAT_PATH, InstanceReport, JoinToken


def test_admin_routes_need_the_admin_token(api: Api) -> None:
    for path in ("/v1/nodes", "/v1/tokens", "/v1/deployments", "/v1/results", "/v1/replicas"):
        refused = api.anon.get(path)
        assert refused.status_code == 401, path
        assert "admin token" in refused.json()["detail"]
    wrong = api.anon.get("/v1/nodes", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "not this controller's" in wrong.json()["detail"]
    assert api.anon.get("/healthz").json()["status"] == "ok"
    api.enrol("edge-1")
    metrics = api.anon.get("/metrics").text
    assert "ukedge_controller_requests_total" in metrics
    assert 'ukedge_controller_nodes{status="ready"} 1.0' in metrics


def test_token_pins_the_certificate_and_enrols_many_nodes(api: Api) -> None:
    token = api.token(description="batch")
    join = JoinToken.parse(token)
    assert join.fingerprint == api.controller.identity.fingerprint
    first, second = api.enrol("edge-1", token), api.enrol("edge-2", token)
    assert first.id != second.id and first.reply.credential != second.reply.credential
    [info] = api.admin.get("/v1/tokens").json()
    assert info["nodes_enrolled"] == 2 and info["description"] == "batch"
    assert join.secret not in str(info)
    names = [n["name"] for n in api.admin.get("/v1/nodes").json()]
    assert names == ["edge-1", "edge-2"]


def _enrol(api: Api, token: str, name: str = "edge-x") -> tuple[int, str]:
    credential = JoinToken.parse(token).credential
    r = api.anon.post(ENROL_PATH, json={"token": credential, "name": name, "architecture": "amd64"})
    return r.status_code, r.json().get("detail", "")


def test_enrol_refuses_bad_expired_and_used_up_tokens(api: Api, controller: Controller) -> None:
    good = api.token()
    join = JoinToken.parse(good)
    wrong_secret = JoinToken(join.fingerprint, join.token_id, "x" * 43).encode()
    assert _enrol(api, wrong_secret)[0] == 401
    unknown = JoinToken(join.fingerprint, "0123456789abcdef", join.secret).encode()
    assert _enrol(api, unknown)[0] == 401

    once = api.token(uses=1)
    assert _enrol(api, once, "edge-a")[0] == 200
    status, detail = _enrol(api, once, "edge-b")
    assert status == 401 and "no uses left" in detail

    clock = [controller.clock()]
    controller.clock = lambda: clock[0]
    short = api.token(ttl_s=60)
    clock[0] += 61
    status, detail = _enrol(api, short, "edge-c")
    assert status == 401 and "expired" in detail

    token_id = JoinToken.parse(good).token_id
    assert api.admin.delete(f"/v1/tokens/{token_id}").status_code == 204
    assert _enrol(api, good, "edge-d")[0] == 401
    assert api.admin.delete(f"/v1/tokens/{token_id}").status_code == 404
    # Nothing was enrolled by a refused token.
    assert [n["name"] for n in api.admin.get("/v1/nodes").json()] == ["edge-a"]


def test_bodies_over_the_limit_are_refused_unread(api: Api) -> None:
    from ukedge.controller._api import MAX_BODY_BYTES

    huge = b"{" + b" " * MAX_BODY_BYTES + b"}"
    r = api.anon.post(ENROL_PATH, content=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "request body over" in r.json()["detail"]


def test_a_node_name_is_enrolled_once(api: Api) -> None:
    token = api.token()
    api.enrol("edge-1", token)
    status, detail = _enrol(api, token, "edge-1")
    assert status == 409 and "edge-1" in detail


def test_heartbeat_needs_the_nodes_own_credential(api: Api) -> None:
    one, two = api.enrol("edge-1"), api.enrol("edge-2")
    body = {
        "name": "edge-1",
        "architecture": "amd64",
        "accelerator": "tcg",
        "capacity": {"memory_mib": 1024, "vcpus": 4},
        "allocated": {"memory_mib": 0, "vcpus": 0},
    }
    path = HEARTBEAT_PATH.format(node_id=one.id)
    assert api.anon.post(path, json=body).status_code == 401
    other = {"Authorization": f"Bearer {two.reply.credential}"}
    assert api.anon.post(path, json=body, headers=other).status_code == 401
    assert api.anon.post(path, json=body, headers=one.auth).status_code == 200
    node = api.admin.get(f"/v1/nodes/{one.id}").json()
    assert node["capacity_memory_mib"] == 1024 and node["accelerator"] == "tcg"
    assert node["status"] == "ready"


@dataclass(frozen=True)
class _Plan:
    add: list[ReplicaView] = field(default_factory=list)
    remove: list[ReplicaView] = field(default_factory=list)
    rollbacks: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)


def _deploy(api: Api, name: str = "web", digit: str = "a") -> None:
    # Pinned already; its registry is unreachable, so it is taken unread.
    spec = {
        "name": name,
        "image": "127.0.0.1:1/app@sha256:" + digit * 64,
        "memory_mib": 64,
        "vcpus": 1,
        "env": {"MODE": "edge"},
    }
    r = api.admin.post("/v1/deployments", json=spec)
    assert r.status_code == 200, r.text


def test_desired_state_follows_the_generation(api: Api, controller: Controller) -> None:
    node = api.enrol("edge-1")
    first = node.beat()
    assert first.desired is not None and first.desired.instances == []
    assert node.beat().desired is None  # applied: steady-state beats carry nothing
    _deploy(api)
    replica = ReplicaView("web", "r1", 1, node.id)
    with controller.db.write() as connection:
        apply_plan(connection, _Plan(add=[replica]), now=controller.now())
    reply = node.beat()
    assert reply.desired is not None
    [wanted] = reply.desired.instances
    assert (wanted.name, wanted.deployment, wanted.replica, wanted.revision) == (
        "web-r1",
        "web",
        "r1",
        1,
    )
    assert wanted.request.image.endswith("@sha256:" + "a" * 64)
    assert wanted.request.env == {"MODE": "edge"} and wanted.request.memory_mib == 64
    assert node.beat().desired is None

    report = InstanceReport(
        name="web-r1",
        deployment="web",
        replica="r1",
        revision=1,
        image=wanted.request.image,
        state=InstanceState.RUNNING,
        health=HealthStatus.HEALTHY,
    )
    node.beat([report])
    [record] = api.admin.get("/v1/replicas", params={"deployment": "web"}).json()
    assert record["state"] == ReplicaState.RUNNING
    assert record["node_name"] == "edge-1" and record["instance"] == "web-r1"
    assert api.admin.get("/v1/deployments/web").json()["rollout"]["state"] == "complete"

    # A new revision: the node is told to fetch its image before the rollout reaches it.
    _deploy(api, digit="b")
    ahead = node.beat([report])
    assert ahead.desired is not None
    assert ahead.desired.prepull == ["127.0.0.1:1/app@sha256:" + "b" * 64]
    assert [i.revision for i in ahead.desired.instances] == [1]

    assert api.admin.delete("/v1/deployments/web").status_code == 204
    gone = node.beat([report])
    assert gone.desired is not None and gone.desired.instances == []


def test_nodes_go_not_ready_without_heartbeats(api: Api, controller: Controller) -> None:
    from ukedge.controller._reconcile import mark_not_ready

    node = api.enrol("edge-1")
    node.beat()
    with controller.db.write() as connection:
        assert mark_not_ready(connection, now=controller.now() + 16, after_s=15) == ["edge-1"]
    assert api.admin.get("/v1/nodes/edge-1").json()["status"] == "not-ready"
    node.beat()
    assert api.admin.get("/v1/nodes/edge-1").json()["status"] == "ready"


def test_node_commands(api: Api) -> None:
    node = api.enrol("edge-1", labels={"zone": "a", "tier": "edge"})
    node.beat(labels={"zone": "a", "tier": "edge"})
    r = api.admin.put(
        "/v1/nodes/edge-1/labels", json={"set": {"gpu": "yes", "zone": "b"}, "remove": ["tier"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == {"zone": "b", "gpu": "yes"}
    node.beat(labels={"zone": "a", "tier": "edge"})  # the node's own report does not undo it
    assert api.admin.get(f"/v1/nodes/{node.id}").json()["labels"] == {"zone": "b", "gpu": "yes"}

    assert api.admin.post("/v1/nodes/edge-1/cordon").json()["cordoned"] is True
    drained = api.admin.post("/v1/nodes/edge-1/drain").json()
    assert drained["draining"] is True
    back = api.admin.post("/v1/nodes/edge-1/uncordon").json()
    assert back["cordoned"] is False and back["draining"] is False

    assert api.admin.delete("/v1/nodes/edge-1").status_code == 204
    missing = api.admin.get("/v1/nodes/edge-1")
    assert missing.status_code == 404 and "edge-1" in missing.json()["detail"]
    refused = api.anon.post(
        HEARTBEAT_PATH.format(node_id=node.id),
        json={
            "name": "edge-1",
            "architecture": "amd64",
            "accelerator": "tcg",
            "capacity": {"memory_mib": 1, "vcpus": 1},
            "allocated": {"memory_mib": 0, "vcpus": 0},
        },
        headers=node.auth,
    )
    assert refused.status_code == 401 and "enrol it again" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tokens", {"uses": 0}, "uses"),
        ("/v1/tokens", {"ttl_s": -1}, "ttl_s"),
        ("/v1/tokens", {"surprise": 1}, "surprise"),
        ("/v1/nodes/edge-1/labels", {"set": {"bad key": "x"}}, "set"),
        ("/v1/deployments", {"name": "Bad_Name", "image": "x"}, "name"),
        ("/v1/deployments", {"name": "ok", "image": "x", "replicas": -1}, "replicas"),
        ("/v1/deployments", {"name": "ok"}, "image"),
        ("/v1/deployments", {"name": "ok", "image": "x", "vcpus": 0}, "vcpus"),
        (
            "/v1/deployments",
            {"name": "ok", "image": "x", "strategy": {"max_surge": 0, "max_unavailable": 0}},
            "strategy",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    api: Api, path: str, body: dict[str, object], field: str
) -> None:
    api.enrol("edge-1")
    r = api.admin.request("PUT" if path.endswith("labels") else "POST", path, json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


@pytest.mark.parametrize(
    ("state", "health", "exit_code", "restarts", "policy", "expected"),
    [
        (InstanceState.RUNNING, HealthStatus.HEALTHY, None, 0, "no", ReplicaState.RUNNING),
        (InstanceState.RUNNING, HealthStatus.NONE, None, 0, "no", ReplicaState.RUNNING),
        (InstanceState.RUNNING, HealthStatus.STARTING, None, 0, "no", ReplicaState.STARTING),
        (InstanceState.RUNNING, HealthStatus.UNHEALTHY, None, 0, "no", ReplicaState.UNHEALTHY),
        (InstanceState.STARTING, HealthStatus.NONE, None, 0, "no", ReplicaState.STARTING),
        (InstanceState.EXITED, HealthStatus.NONE, 1, 0, "no", ReplicaState.FAILED),
        (InstanceState.EXITED, HealthStatus.NONE, 1, 0, "always", ReplicaState.STARTING),
        (InstanceState.EXITED, HealthStatus.NONE, 1, 2, "on-failure", ReplicaState.STARTING),
        (InstanceState.EXITED, HealthStatus.NONE, 1, 3, "on-failure:3", ReplicaState.FAILED),
        (InstanceState.EXITED, HealthStatus.NONE, 1, 3, "always", ReplicaState.FAILED),
        (InstanceState.RUNNING, HealthStatus.NONE, None, 7, "always", ReplicaState.RUNNING),
        (InstanceState.EXITED, HealthStatus.NONE, 0, 0, "on-failure", ReplicaState.COMPLETED),
        (InstanceState.EXITED, HealthStatus.NONE, 0, 0, "no", ReplicaState.COMPLETED),
        (InstanceState.EXITED, HealthStatus.NONE, 0, 3, "always", ReplicaState.FAILED),
        (InstanceState.FAILED, HealthStatus.NONE, None, 0, "on-failure", ReplicaState.STARTING),
    ],
)
def test_what_a_report_means_for_the_replica(
    state: InstanceState,
    health: HealthStatus,
    exit_code: int | None,
    restarts: int,
    policy: str,
    expected: ReplicaState,
) -> None:
    from ukedge.controller._heartbeat import replica_state
    from ukedge.host import parse_restart_policy

    report = InstanceReport(
        name="web-r1",
        image="x",
        state=state,
        health=health,
        exit_code=exit_code,
        restart_count=restarts,
    )
    assert replica_state(report, parse_restart_policy(policy)) == expected
