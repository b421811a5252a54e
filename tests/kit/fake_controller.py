"""A stand-in for the controller's REST API over real HTTPS, for the client and CLI tests until
the controller app itself is merged: the routes of the contract (docs: notes/controller.md) that
those tests use, checking the admin token and recording what it was sent.

Scripted where the real one would decide: the result stream ends cleanly on its first
connection and breaks on its second (the client must resume both times), and a deployment's
rollout walks through the states a test lists.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOKEN = "admin-secret-token"

NODE = {
    "id": "n0123456789abcdef",
    "name": "edge-1",
    "status": "ready",
    "cordoned": False,
    "draining": False,
    "architecture": "x86_64",
    "accelerator": "tcg",
    "accelerators": {"linux/amd64": "tcg", "linux/arm64": "tcg"},
    "labels": {"zone": "a"},
    "capacity_memory_mib": 2048,
    "capacity_vcpus": 8,
    "allocated_memory_mib": 128,
    "allocated_vcpus": 2,
    "instances": 2,
    "last_heartbeat": 1.0,
    "enrolled_at": 0.0,
    "drain_migrate": None,
    "drain_postcopy": False,
    "migration_host": None,
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
    """The routes the client and CLI tests need; keeps what it was sent."""

    def __init__(self) -> None:
        self.deployed: list[dict[str, Any]] = []
        #: Rollout states (``RolloutStatus`` fields) each GET of the deployment walks through;
        #: the last one stays.
        self.rollouts: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.last_event_ids: list[str | None] = []
        self.labels: list[dict[str, Any]] = []
        self.cordoned: list[str] = []
        self.token_requests: list[dict[str, Any]] = []
        #: How many reconnects of the result stream, after its second connection, answer 503.
        self.unavailable = 0

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
            self.current = {
                "name": spec["name"],
                "spec": spec,
                "revision": 1,
                "rollout": rollout,
                "created_at": 1.0,
                "updated_at": 1.0,
            }
            return JSONResponse(self.current)

        async def deployment(request: Request) -> Response:
            name = request.path_params["name"]
            if self.current is None or self.current["name"] != name:
                return JSONResponse({"detail": f"no such deployment: {name}"}, status_code=404)
            if self.rollouts:
                step = self.rollouts.pop(0) if len(self.rollouts) > 1 else self.rollouts[0]
                self.current = {**self.current, "rollout": {**self.current["rollout"], **step}}
            return JSONResponse(self.current)

        async def tokens(request: Request) -> Response:
            body = await request.json()
            self.token_requests.append(body)
            if body.get("uses") is not None and body["uses"] < 1:
                # FastAPI's shape for a body its validation refused: a list of pydantic errors.
                detail = [
                    {
                        "type": "greater_than_equal",
                        "loc": ["body", "uses"],
                        "msg": "Input should be greater than or equal to 1",
                        "input": body["uses"],
                    }
                ]
                return JSONResponse({"detail": detail}, status_code=422)
            created = {
                "id": "tok0001",
                "token": "UKJ1." + "ab" * 32 + ".tok0001.secretsecretsecret",
                "expires_at": 5000.0 if body.get("ttl_s") else None,
                "uses_left": body.get("uses"),
            }
            return JSONResponse(created, status_code=201)

        async def stream(request: Request) -> Response:
            last = request.headers.get("last-event-id")
            self.last_event_ids.append(last)
            connection = len(self.last_event_ids)
            start = int(last) + 1 if last is not None else 1
            if connection > 2 and self.unavailable > 0:
                self.unavailable -= 1
                return JSONResponse({"detail": "starting"}, status_code=503)

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
                Route("/v1/deployments/{name}", deployment),
                Route("/v1/tokens", tokens, methods=["POST"]),
                Route("/v1/results/stream", stream),
            ]
        )
