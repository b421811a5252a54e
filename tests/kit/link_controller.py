"""A controller for the link's end-to-end tests (``tests/link/test_link_e2e.py``): served over
HTTPS by uvicorn in a thread, with its reconcile loop, and stoppable and startable again on the
same port and data (an outage as the agents see it).

Written against wt-ctl's ``ukedge.controller`` (``Controller``, ``ControllerSettings``,
``create_controller_app``); the e2e tests passed with it on a scratch merge of wt-link, wt-ctl
and wt-sched. The lead's ``controller`` fixture can be::

    @pytest.fixture
    def controller(tmp_path: Path) -> Iterator[RestartableController]:
        running = RestartableController(tmp_path / "controller")
        yield running
        running.stop()
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from kit.net import free_port
from ukedge import server

__all__ = ["RestartableController"]


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
