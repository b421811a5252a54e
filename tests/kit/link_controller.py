"""A controller for the link's end-to-end tests (``tests/link/``): served over HTTPS by
uvicorn in a thread, with its reconcile loop, and stoppable and startable again on the same port
and data (an outage as the agents see it); its admin REST API (:class:`AdminApi`).

``tests/link/conftest.py`` serves them as the ``controller`` and ``api`` fixtures;
:func:`restartable_controller` is for a fixture that wants other settings (a fleet's timing).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kit.agent import AgentProcess, running_agent
from kit.net import free_port
from kit.postgres import PostgresCluster
from ukedge import server
from ukedge.host.link import pinned_context

__all__ = [
    "AdminApi",
    "RestartableController",
    "enrolled_agent",
    "restartable_controller",
    "web_deployment",
]


class RestartableController:
    """``url``, ``cert`` (PEM), ``admin_token``, ``stop()`` and ``start()``."""

    def __init__(self, data: Path, **settings: Any) -> None:
        self.data = data
        self.settings = {"access_log": False, "heartbeat_interval_s": 1.0, **settings}
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._controller: Any = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.start()
        self.cert: str = self._controller.identity.cert_pem
        self.admin_token: str = self._controller.identity.admin_token

    def start(self) -> None:
        """Serve again (same port, same data: identity and state kept); returns once it
        answers."""
        from ukedge.controller import Controller, ControllerSettings, create_controller_app

        self._controller = Controller(ControllerSettings(data_dir=self.data, **self.settings))
        identity = self._controller.identity
        config = server.uvicorn_config(
            create_controller_app(self._controller, run_loop=True),
            host="127.0.0.1",
            port=self.port,
            ssl_certfile=str(identity.cert_path),
            ssl_keyfile=str(identity.key_path),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the controller did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving (agents find it unreachable) and close the controller."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
        if self._controller is not None:
            self._controller.close()
        self._server = self._thread = self._controller = None


@contextlib.contextmanager
def restartable_controller(
    request: pytest.FixtureRequest, data: Path, **settings: Any
) -> Iterator[RestartableController]:
    """A controller on SQLite, or on PostgreSQL when the fixture using it is parametrized with
    "postgresql" (its own ``params``, or a test's ``indirect`` parametrization)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        settings["db"] = cluster.create_database()
    running = RestartableController(data, **settings)
    try:
        yield running
    finally:
        running.stop()


class AdminApi:
    """The controller's REST API with the admin token, trusting exactly its certificate.

    ``api(method, path, ...)`` asserts a 2xx answer and returns its JSON (None when empty).
    Make a new one after the controller restarts: the old one's connections are gone.
    """

    def __init__(self, controller: RestartableController) -> None:
        self.client = httpx.Client(
            base_url=controller.url,
            verify=pinned_context(controller.cert),
            headers={"authorization": f"Bearer {controller.admin_token}"},
            timeout=30,
        )

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        """``GET path?params``, asserting 200."""
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def token(self, description: str = "e2e") -> str:
        """A new join token."""
        return str(self("POST", "/v1/tokens", json={"description": description})["token"])

    def results(self, **params: Any) -> list[dict[str, Any]]:
        """Every record of ``GET /v1/results`` matching ``params``, page by page."""
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.get("/v1/results", **params, after_id=after, limit=500)
            out += page
            if len(page) < 500:
                return out
            after = page[-1]["id"]

    def close(self) -> None:
        self.client.close()


def enrolled_agent(
    data: Path, name: str, controller: RestartableController, api: AdminApi, *extra: str
) -> AbstractContextManager[AgentProcess]:
    """A host agent named ``name`` (its data in ``data``, ``extra`` arguments added) that
    enrols with ``controller`` by a join token of its own."""
    args = ["--name", name, "--controller", controller.url, "--join-token", api.token(name)]
    return running_agent(data, *args, *extra)


def web_deployment(hub: str, port: int, **extra: Any) -> dict[str, Any]:
    """The spec of ``web``: one replica of the hub's sensor-agg:1, closing a window each
    second, its port 8080 on ``port`` of the node."""
    return {
        "name": "web",
        "image": f"{hub}/sensor-agg:1",
        "replicas": 1,
        "env": {"WINDOW_SECONDS": "1"},
        "ports": [{"host_port": port, "guest_port": 8080}],
        **extra,
    }
