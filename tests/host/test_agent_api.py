"""The host agent's API without booting VMs: token and socket access, input validation, errors
that keep their class across the wire, node info, events, metrics, OpenAPI."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kit.agent import AgentProcess, running_agent
from ukedge.errors import AgentError, ImageError, NoSuchInstanceError, UsageError
from ukedge.host import AgentClient, run_request


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    data = tmp_path_factory.mktemp("agent") / "data"
    with running_agent(data, "--name", "edge-1", "--labels", "zone=a,tier=edge") as agent:
        yield agent


def test_token_is_made_once_kept_private_and_printed_once(tmp_path: Path) -> None:
    with running_agent(tmp_path / "data") as agent:
        token = agent.token
        assert stat.S_IMODE((agent.data / "token").stat().st_mode) == 0o600
        assert token in agent.starts[0]
        agent.stop()
        agent.start()
        assert agent.token == token
        assert token not in agent.starts[1].removeprefix(agent.starts[0])


def test_tcp_needs_the_token_the_unix_socket_does_not(agent: AgentProcess) -> None:
    assert httpx.get(f"{agent.url}/healthz").json()["status"] == "ok"
    refused = httpx.get(f"{agent.url}/v1/instances")
    assert refused.status_code == 401
    assert "token" in refused.json()["error"]["message"]
    wrong = httpx.get(f"{agent.url}/v1/instances", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "not this agent's" in wrong.json()["error"]["message"]
    with pytest.raises(AgentError, match="not this agent's"):
        agent.client(token="wrong").list()
    assert agent.client().list() == []
    assert agent.client(unix=True).list() == []
    assert stat.S_IMODE(agent.socket.stat().st_mode) == 0o600


def test_node_info(agent: AgentProcess) -> None:
    info = agent.client(unix=True).info()
    assert info.name == "edge-1"
    assert info.labels == {"zone": "a", "tier": "edge"}
    assert info.cpus >= 1
    assert 0 < info.memory_allocatable_bytes < info.memory_total_bytes
    assert info.accelerator in ("kvm", "tcg")
    assert info.qemu_version
    assert info.images == 0 and info.instances == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"image": "x", "ports": [{"host_port": 70000, "guest_port": 80}]}, "ports[0].host_port"),
        ({"image": "x", "name": "no spaces"}, "name"),
        ({"image": "x", "memory_mib": 1}, "memory_mib"),
        ({"image": "x", "vcpus": 0}, "vcpus"),
        ({"image": "x", "restart": {"name": "sometimes"}}, "restart.name"),
        ({"image": "x", "on_demand": True}, "published TCP port"),
        ({"image": "x", "env": {"A=B": "c"}}, "env"),
        ({"image": "x", "surprise": 1}, "surprise"),
        ({"image": ""}, "image"),
        ({}, "image"),
        ({"image": "x", "name": "nl\n"}, "name"),
        ({"image": "x", "hostname": "hh\n"}, "hostname"),
        (
            {"image": "x", "ports": [{"host_ip": "::1", "host_port": 18090, "guest_port": 80}]},
            "ports[0].host_ip",
        ),
        (
            {
                "image": "x",
                "ports": [
                    {"host_port": 18090, "guest_port": 80},
                    {"host_ip": "0.0.0.0", "host_port": 18090, "guest_port": 81},
                ],
            },
            "published twice",
        ),
        ({"image": "x", "env": {"BIG": "x" * 70_000}}, "at most 65536"),
        # Strict numbers and flags: what a lenient parser would coerce is refused.
        ({"image": "x", "vcpus": True}, "vcpus"),
        ({"image": "x", "memory_mib": "64"}, "memory_mib"),
        ({"image": "x", "cold": "yes"}, "cold"),
        ({"image": "x", "on_demand": 1}, "on_demand"),
        ({"image": "x", "ports": [{"host_port": "18090", "guest_port": 80}]}, "host_port"),
        ({"image": "x", "restart": {"name": "on-failure", "max_retries": 1.5}}, "max_retries"),
        # Bytes the guest cannot take: the schema's error (422), not a later 400.
        ({"image": "x", "args": ["a\0b"]}, "args: argument 0 contains a NUL"),
        ({"image": "x\0y"}, "image"),
    ],
)
def test_bad_payloads_are_refused_naming_the_field(
    agent: AgentProcess, payload: dict[str, object], field: str
) -> None:
    response = httpx.post(
        f"{agent.url}/v1/instances",
        json=payload,
        headers={"Authorization": f"Bearer {agent.token}"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["kind"] == "UsageError"
    assert field in error["message"]
    assert agent.client().list(all_instances=True) == []


def test_pull_refuses_unknown_fields_as_run_requests_do(agent: AgentProcess) -> None:
    headers = {"Authorization": f"Bearer {agent.token}"}
    for route in ("/v1/images/pull", "/v1/images/prewarm", "/v1/instances"):
        response = httpx.post(
            f"{agent.url}{route}", json={"ref": "x", "image": "x", "surprise": 1}, headers=headers
        )
        assert response.status_code == 422, (route, response.text)
        assert "surprise" in response.json()["error"]["message"]


def test_bodies_that_are_not_json_get_the_one_error_shape(agent: AgentProcess) -> None:
    headers = {"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"}
    for body in (b"&\xff", b"{"):
        response = httpx.post(f"{agent.url}/v1/images/pull", content=body, headers=headers)
        assert response.status_code in (400, 422), response.text
        assert response.json()["error"]["kind"] == "UsageError", response.text
    missing = httpx.get(f"{agent.url}/v1/nothing-here", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["kind"] == "UsageError"


def test_errors_keep_their_class_and_message(agent: AgentProcess) -> None:
    client = agent.client()
    with pytest.raises(NoSuchInstanceError, match="no such instance: ghost"):
        client.get("ghost")
    with pytest.raises(ImageError):
        client.run(run_request(image="missing:1"))
    with pytest.raises(UsageError):
        client.pull("not a reference")
    response = httpx.get(
        f"{agent.url}/v1/instances/ghost", headers={"Authorization": f"Bearer {agent.token}"}
    )
    assert response.status_code == 404
    with pytest.raises(NoSuchInstanceError):
        client.get("___")  # not SQL wildcards
    with pytest.raises(NoSuchInstanceError):
        client.get("hub.example:5000/app:1")  # an image reference is no instance key


def test_bodies_over_the_limit_are_refused_unread(agent: AgentProcess) -> None:
    response = httpx.post(
        f"{agent.url}/v1/instances",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "request body over" in response.json()["error"]["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 65536

    response = httpx.post(
        f"{agent.url}/v1/instances",
        content=chunked(),
        headers={"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert agent.client().list(all_instances=True) == []


def test_unreachable_agent_is_a_clear_error(tmp_path: Path) -> None:
    with (
        AgentClient(f"unix://{tmp_path}/none.sock") as client,
        pytest.raises(AgentError, match="cannot reach the host agent"),
    ):
        client.list()
    with pytest.raises(AgentError, match="invalid agent address"):
        AgentClient("nowhere")


def test_openapi_documents_every_error_answer(agent: AgentProcess) -> None:
    """Each API route lists the statuses it can answer with, in the one error shape (``/healthz``
    is open and takes no input: it answers 200 or nothing)."""
    headers = {"Authorization": f"Bearer {agent.token}"}
    spec = httpx.get(f"{agent.url}/openapi.json", headers=headers).json()
    error_schema = {"$ref": "#/components/schemas/ErrorResponse"}
    api_paths = {path: ops for path, ops in spec["paths"].items() if path.startswith("/v1/")}
    assert api_paths, "the API's routes are missing from the document"
    for path, operations in api_paths.items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            expected = {"401", "422", "500"}
            if "{key}" in path:
                expected.add("404")
            if method in ("post", "delete") and path.startswith("/v1/instances/{key}"):
                expected |= set() if path.endswith("/wait") else {"409"}
            if method == "post" and path in ("/v1/instances", "/v1/images/prewarm"):
                expected |= {"400", "404", "409", "413", "502"}
            assert expected <= set(responses), f"{where}: {sorted(expected - set(responses))}"
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_schema, f"{where} {status}: {schema}"
    assert "HTTPValidationError" not in spec["components"]["schemas"], "not our error shape"


def test_openapi_and_metrics(agent: AgentProcess) -> None:
    headers = {"Authorization": f"Bearer {agent.token}"}
    spec = httpx.get(f"{agent.url}/openapi.json", headers=headers).json()
    assert "/v1/instances" in spec["paths"] and "/v1/images/pull" in spec["paths"]
    agent.client().list()
    metrics = httpx.get(f"{agent.url}/metrics", headers=headers).text
    assert 'ukedge_agent_requests_total{method="GET",route="/v1/instances",status="200"}' in metrics
    assert 'ukedge_agent_instances{state="running"} 0.0' in metrics
    assert "_created" not in metrics
    # No sink configured: the backlog families are there, with no series.
    assert "# TYPE ukedge_agent_results_backlog gauge" in metrics


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
        ("mqtt://user:secret@broker:1883/x", "mqtt://broker:1883/x"),
        ("mqtts://user@broker", "mqtts://broker"),
    ],
)
def test_sink_labels_never_carry_credentials(url: str, label: str) -> None:
    from ukedge.host.agent._metrics import _sink_label

    assert _sink_label(url) == label


def test_settings_file_and_environment(tmp_path: Path) -> None:
    from ukedge.host import load_agent_settings

    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nname = "from-file"\noverride = 1\n')
    with pytest.raises(UsageError, match="override"):
        load_agent_settings(config, {})
    config.write_text('[agent]\nname = "from-file"\noverride = 1\n'.replace("override = 1\n", ""))
    env = {"UKEDGE_AGENT_NAME": "from-env", "UKEDGE_AGENT_MQTT": "mqtt://a:1,mqtt://b:2"}
    settings = load_agent_settings(config, env)
    assert settings.name == "from-env"
    assert settings.mqtt == ["mqtt://a:1", "mqtt://b:2"]
    assert load_agent_settings(config, env, name="from-flag").name == "from-flag"
    with pytest.raises(UsageError, match="addr"):
        load_agent_settings(None, {}, addr="nowhere")
    with pytest.raises(UsageError, match="memory"):
        load_agent_settings(None, {}, memory="lots")
    with pytest.raises(UsageError, match=r"unknown setting UKEDGE_AGENT_DATA;.*DATA_DIR"):
        load_agent_settings(None, {"UKEDGE_AGENT_DATA": "/srv"})


def test_requests_are_access_logged_like_the_hubs(agent: AgentProcess) -> None:
    headers = {"Authorization": f"Bearer {agent.token}"}
    assert httpx.get(f"{agent.url}/v1/instances?all=true", headers=headers).status_code == 200
    deadline = time.monotonic() + 30
    while True:
        lines = [
            line for line in agent.log.read_text().splitlines() if "ukedge.host.access" in line
        ]
        if any("GET /v1/instances 200" in line for line in lines):
            break
        assert time.monotonic() < deadline, f"no access log lines for the requests: {lines}"
        time.sleep(0.05)
