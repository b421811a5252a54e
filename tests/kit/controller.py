"""Controller test helpers: a controller over SQLite or PostgreSQL (parametrized fixture), its API
in-process (ASGI over httpx) or served over HTTPS by uvicorn in a thread, and a node's side of the
link (enrol, heartbeat, results) spoken over the same wire models as the agent speaks them."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal
from starlette.types import ASGIApp

from kit.net import free_port
from kit.postgres import PostgresCluster
from ukedge import server
from ukedge.controller import Controller, ControllerSettings, create_controller_app
from ukedge.host import HealthStatus, InstanceState
from ukedge.host.link import (
    ENROL_PATH,
    HEARTBEAT_PATH,
    RESULTS_PATH,
    DesiredInstance,
    EnrolReply,
    Heartbeat,
    HeartbeatReply,
    InstanceReport,
    JoinToken,
    NodeResources,
    pinned_context,
)

__all__ = [
    "Api",
    "Node",
    "RunningController",
    "db_url",
    "make_controller",
    "running_controller",
    "running_reports",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind (PostgreSQL from the session's throw-away cluster)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controller' / 'controller.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()


def make_controller(data: Path, db: str | None = None, **settings: Any) -> Controller:
    values: dict[str, Any] = {"data_dir": data, "db": db, "access_log": False}
    values.update(settings)
    return Controller(ControllerSettings(**values))


@dataclass
class Api:
    """The controller's API in-process, with the admin token (``admin``) or none (``anon``)."""

    controller: Controller
    admin: httpx.Client
    anon: httpx.Client

    def token(self, **body: Any) -> str:
        r = self.admin.post("/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def enrol(self, name: str, token: str | None = None, **extra: Any) -> Node:
        join = JoinToken.parse(token or self.token())
        body = {"token": join.credential, "name": name, "architecture": "amd64", **extra}
        r = self.anon.post(ENROL_PATH, json=body)
        assert r.status_code == 200, r.text
        return Node(self.anon, name, EnrolReply.model_validate(r.json()))


class _AsgiTransport(httpx.BaseTransport):
    """httpx's ASGI transport for a sync client: each request runs on the portal's event loop
    and its whole response is read there (no streaming: streams are tested over HTTPS)."""

    def __init__(self, app: ASGIApp, portal: BlockingPortal) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            forwarded = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self._inner.handle_async_request(forwarded)
            content = await response.aread()
            return response.status_code, response.headers.raw, content

        status, headers, content = self._portal.call(send)
        return httpx.Response(status, headers=headers, content=content, request=request)


@contextlib.contextmanager
def api_for(controller: Controller) -> Iterator[Api]:
    """The app without its reconcile loop (tests run passes themselves)."""
    app = create_controller_app(controller, run_loop=False)
    token = controller.identity.admin_token
    with start_blocking_portal() as portal:
        transport = _AsgiTransport(app, portal)
        base = "http://controller"
        with (
            httpx.Client(
                transport=transport,
                base_url=base,
                headers={"Authorization": f"Bearer {token}"},
            ) as admin,
            httpx.Client(transport=transport, base_url=base) as anon,
        ):
            yield Api(controller, admin, anon)


@dataclass
class Node:
    """A node's side of the link (what the agent does, without running anything)."""

    client: httpx.Client
    name: str
    reply: EnrolReply
    memory_mib: int = 4096
    vcpus: int = 8
    #: What the node reports as in use (its instances and what its admission rules hold back).
    allocated_memory_mib: int = 0
    allocated_vcpus: int = 0
    applied: int = 0

    @property
    def id(self) -> str:
        return self.reply.node_id

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.reply.credential}"}

    def beat(self, instances: list[InstanceReport] | None = None, **fields: Any) -> HeartbeatReply:
        body = Heartbeat(
            name=self.name,
            architecture="amd64",
            accelerator="tcg",
            capacity=NodeResources(memory_mib=self.memory_mib, vcpus=self.vcpus),
            allocated=NodeResources(
                memory_mib=self.allocated_memory_mib, vcpus=self.allocated_vcpus
            ),
            instances=instances or [],
            applied_generation=self.applied,
            **fields,
        )
        r = self.client.post(
            HEARTBEAT_PATH.format(node_id=self.id),
            content=body.model_dump_json(),
            headers={**self.auth, "Content-Type": "application/json"},
        )
        assert r.status_code == 200, r.text
        reply = HeartbeatReply.model_validate(r.json())
        if reply.desired is not None:
            self.applied = reply.desired.generation
        return reply

    def send_results(self, instance: str, records: list[dict[str, Any]], **batch: Any) -> Any:
        r = self.client.post(
            RESULTS_PATH.format(node_id=self.id),
            json={"instance": instance, "records": records, **batch},
            headers=self.auth,
        )
        assert r.status_code == 200, r.text
        return r.json()


def running_reports(desired: Iterable[DesiredInstance]) -> list[InstanceReport]:
    """What a node reports once it runs every ``desired`` instance (running, no health check)."""
    return [InstanceReport.of_desired(d, InstanceState.RUNNING, HealthStatus.NONE) for d in desired]


@dataclass
class RunningController:
    url: str
    controller: Controller
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, *, admin: bool = True, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.controller.identity.admin_token}"}
        kwargs.setdefault("timeout", 30)
        return httpx.Client(
            base_url=self.url,
            verify=pinned_context(self.controller.identity.cert_pem),
            headers=headers if admin else None,
            **kwargs,
        )


@contextlib.contextmanager
def running_controller(
    controller: Controller, *, run_loop: bool = False, tls: bool = True
) -> Iterator[RunningController]:
    """The controller served over HTTPS (or plain HTTP: ``tls=False``, for tools that do not
    take a pinned certificate) on a free port of 127.0.0.1, by uvicorn in a thread."""
    port = free_port()
    identity = controller.identity
    ssl = {"ssl_certfile": str(identity.cert_path), "ssl_keyfile": str(identity.key_path)}
    config = server.uvicorn_config(
        create_controller_app(controller, run_loop=run_loop),
        host="127.0.0.1",
        port=port,
        **(ssl if tls else {}),
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("controller did not start")
        time.sleep(0.02)
    try:
        scheme = "https" if tls else "http"
        yield RunningController(f"{scheme}://127.0.0.1:{port}", controller, uv, thread)
    finally:
        uv.should_exit = True
        thread.join(15)
