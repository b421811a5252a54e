"""The controller client against a real HTTPS server (uvicorn, a self-signed certificate): it
trusts exactly the pinned certificate, sends the admin token, turns refusals into
ControllerError with the server's detail, names the URL when nothing listens, and its result
stream resumes after the last record with Last-Event-ID whether the server closes the stream
cleanly or the connection breaks.

The server is a small app with the contract's routes (the real controller app is tested end to
end once it is merged); what it checks and records is what the client is judged on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kit.net import free_port
from kit.tls import CertFiles, self_signed, serve_https
from ukedge.controller import ControllerClient, ControllerConfig, DeploymentSpec
from ukedge.errors import ControllerError

TOKEN = "admin-secret-token"

NODE = {
    "id": "n0123456789abcdef",
    "name": "edge-1",
    "status": "ready",
    "cordoned": False,
    "draining": False,
    "architecture": "x86_64",
    "accelerator": "tcg",
    "labels": {"zone": "a"},
    "capacity_memory_mib": 2048,
    "capacity_vcpus": 8,
    "allocated_memory_mib": 128,
    "allocated_vcpus": 2,
    "instances": 2,
    "last_heartbeat": 1.0,
    "enrolled_at": 0.0,
}


def _record(record_id: int) -> dict[str, Any]:
    return {
        "id": record_id,
        "node_id": NODE["id"],
        "node_name": "edge-1",
        "deployment": "sensor-agg",
        "instance": "sensor-agg-1",
        "seq": record_id,
        "ts": 1000.0 + record_id,
        "received_at": 1000.5 + record_id,
        "result": {"mean": record_id},
    }


class FakeController:
    """The routes the client tests need; keeps what it was sent."""

    def __init__(self) -> None:
        self.deployed: list[dict[str, Any]] = []
        self.last_event_ids: list[str | None] = []
        self.labels: list[dict[str, Any]] = []
        self.cordoned: list[str] = []

    def app(self) -> Starlette:
        async def authorised(request: Request) -> Response | None:
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse({"detail": "invalid admin token"}, status_code=401)
            return None

        async def nodes(request: Request) -> Response:
            return await authorised(request) or JSONResponse([NODE])

        async def node(request: Request) -> Response:
            key = request.path_params["key"]
            if key not in (NODE["id"], NODE["name"]):
                return JSONResponse({"detail": f"no such node: {key}"}, status_code=404)
            return await authorised(request) or JSONResponse(NODE)

        async def labels(request: Request) -> Response:
            if request.path_params["key"] != NODE["id"]:  # actions go by id
                return JSONResponse({"detail": "by id only"}, status_code=404)
            body = await request.json()
            self.labels.append(body)
            changed = {**NODE, "labels": {**NODE["labels"], **body["set"]}}  # type: ignore[dict-item]
            for key in body["remove"]:
                changed["labels"].pop(key, None)
            return JSONResponse(changed)

        async def cordon(request: Request) -> Response:
            self.cordoned.append(request.path_params["key"])
            return JSONResponse({**NODE, "cordoned": True})

        async def deploy(request: Request) -> Response:
            denied = await authorised(request)
            if denied:
                return denied
            spec = await request.json()
            self.deployed.append(spec)
            rollout = {
                "state": "progressing",
                "revision": 1,
                "desired": spec["replicas"],
                "updated": 0,
                "ready": 0,
                "unavailable": 0,
            }
            doc = {
                "name": spec["name"],
                "spec": spec,
                "revision": 1,
                "rollout": rollout,
                "created_at": 1.0,
                "updated_at": 1.0,
            }
            return JSONResponse(doc)

        async def tokens(request: Request) -> Response:
            # FastAPI's shape for a body its validation refused: a list of pydantic errors.
            detail = [
                {
                    "type": "greater_than_equal",
                    "loc": ["body", "uses"],
                    "msg": "Input should be greater than or equal to 1",
                    "input": 0,
                }
            ]
            return JSONResponse({"detail": detail}, status_code=422)

        async def stream(request: Request) -> Response:
            last = request.headers.get("last-event-id")
            self.last_event_ids.append(last)
            connection = len(self.last_event_ids)
            start = int(last) + 1 if last is not None else 1

            def event(record_id: int, kind: str = "") -> bytes:
                data = json.dumps(_record(record_id))
                return f"{kind}id: {record_id}\ndata: {data}\n\n".encode()

            async def events() -> AsyncIterator[bytes]:
                yield b"retry: 50\n\n"
                if connection == 1:  # two records, then the server ends the stream
                    for record_id in (start, start + 1):
                        yield event(record_id)
                    return
                if connection == 2:  # one record, then the connection breaks mid-stream
                    yield event(start)
                    yield b": keep-alive\n\n"
                    raise RuntimeError("connection lost (test)")
                for record_id in itertools.count(start):
                    yield event(record_id, "event: result\n")
                    await asyncio.sleep(0.01)

            return StreamingResponse(events(), media_type="text/event-stream")

        return Starlette(
            routes=[
                Route("/v1/nodes", nodes),
                Route("/v1/nodes/{key}", node),
                Route("/v1/nodes/{key}/labels", labels, methods=["PUT"]),
                Route("/v1/nodes/{key}/cordon", cordon, methods=["POST"]),
                Route("/v1/deployments", deploy, methods=["POST"]),
                Route("/v1/tokens", tokens, methods=["POST"]),
                Route("/v1/results/stream", stream),
            ]
        )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fake() -> FakeController:
    return FakeController()


@pytest.fixture
def url(fake: FakeController, certs: CertFiles) -> Iterator[str]:
    with serve_https(fake.app(), certs) as base:
        yield base


def _client(url: str, pem: str, token: str = TOKEN) -> ControllerClient:
    return ControllerClient(ControllerConfig(url, token, pem, "test.crt"))


def test_pinned_certificate_and_token_reach_the_controller(url: str, certs: CertFiles) -> None:
    with _client(url, certs.pem) as client:
        [node] = client.nodes()
        assert (node.name, node.allocated_memory_mib, node.labels) == ("edge-1", 128, {"zone": "a"})
        assert client.node("edge-1").id == NODE["id"]


def test_another_certificate_is_refused_with_what_to_do(url: str, tmp_path: Path) -> None:
    other = self_signed(tmp_path, "impostor")
    with _client(url, other.pem) as client, pytest.raises(ControllerError) as caught:
        client.nodes()
    message = str(caught.value)
    assert f"the server at {url} is not the controller" in message
    assert "UKEDGE_CONTROLLER_CERT" in message


def test_wrong_token_says_which_setting_to_fix(url: str, certs: CertFiles) -> None:
    with _client(url, certs.pem, token="wrong") as client, pytest.raises(ControllerError) as caught:
        client.nodes()
    assert caught.value.status == 401
    assert "refused the admin token (invalid admin token)" in str(caught.value)
    assert "UKEDGE_CONTROLLER_TOKEN" in str(caught.value)


def test_refusals_carry_the_servers_detail(url: str, certs: CertFiles) -> None:
    with _client(url, certs.pem) as client:
        with pytest.raises(ControllerError, match=r"^node edge-9: no such node: edge-9$") as nf:
            client.node("edge-9")
        assert nf.value.status == 404
        with pytest.raises(ControllerError, match=r"token create: uses: Input should be") as bad:
            client.create_token("batch", uses=0)
        assert bad.value.status == 422


def test_nothing_listening_names_the_url_and_how_to_start_one(certs: CertFiles) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    with _client(url, certs.pem) as client, pytest.raises(ControllerError) as caught:
        client.nodes()
    assert f"cannot reach the controller at {url}" in str(caught.value)
    assert "ukedge controller serve" in str(caught.value)


def test_node_actions_go_by_id_whatever_name_was_given(
    url: str, certs: CertFiles, fake: FakeController
) -> None:
    with _client(url, certs.pem) as client:
        node = client.label_node("edge-1", {"gpu": "yes"}, ["zone"])
        assert node.labels == {"gpu": "yes"}
        assert client.cordon("edge-1").cordoned
    assert fake.labels == [{"set": {"gpu": "yes"}, "remove": ["zone"]}]
    assert fake.cordoned == [NODE["id"]]


def test_deploy_sends_the_whole_spec(url: str, certs: CertFiles, fake: FakeController) -> None:
    spec = DeploymentSpec(name="sensor-agg", image="hub.local:5000/sensor-agg:1", replicas=3)
    with _client(url, certs.pem) as client:
        deployment = client.deploy(spec)
    assert deployment.rollout.desired == 3
    assert DeploymentSpec.model_validate(fake.deployed[0]) == spec


def test_result_stream_resumes_after_the_last_record(
    url: str, certs: CertFiles, fake: FakeController
) -> None:
    with _client(url, certs.pem) as client:
        stream = client.stream_results(deployment="sensor-agg", retry_s=0.05)
        ids = [record.id for record in itertools.islice(stream, 6)]
        stream.close()
    assert ids == [1, 2, 3, 4, 5, 6]  # none lost, none twice, across a clean end and a break
    # The first connection asked for everything new; each reconnect named the last record.
    assert fake.last_event_ids == [None, "2", "3"]


def test_result_stream_starts_after_a_given_record_and_stops_on_request(
    url: str, certs: CertFiles, fake: FakeController
) -> None:
    stop = threading.Event()
    seen: list[int] = []
    with _client(url, certs.pem) as client:
        for record in client.stream_results(after_id=40, stop=stop, retry_s=0.05):
            seen.append(record.id)
            if len(seen) == 2:
                stop.set()
    assert seen == [41, 42]
    assert fake.last_event_ids == ["40"]


def test_result_stream_to_nothing_listening_fails_at_once(certs: CertFiles) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    with _client(url, certs.pem) as client, pytest.raises(ControllerError, match="cannot reach"):
        next(client.stream_results())
