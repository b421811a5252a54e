"""``ukedge up``: a controller, a hub and one local host agent in one process, wired together.

Each server is the same ASGI app its own command serves, run by uvicorn in a thread of its own
(one event loop each: a slow blob upload to the hub never delays a heartbeat). The agent enrols
with the controller through a one-use join token this process makes for itself, the first time
only (the enrolment is kept in the agent's data directory), and pulls from the hub by default.

The data directories are the servers' defaults (``<UKEDGE_HOME>/controller``, ``/hub``,
``/agent``), so the CLI on this machine finds the controller's admin token and certificate with
nothing set; with ``data_dir`` they are its subdirectories and :class:`UpInfo` says what to
export.

Foreground, like ``docker compose up``: SIGINT or SIGTERM stops the instances the controller
deployed on the agent (their results are delivered to the controller first), then the three
servers. The deployments stay in the controller's database, so the next ``up`` on the same data
runs them again. Instances started by hand on the agent keep running, as with any agent.
"""

from __future__ import annotations

import logging
import platform
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from socket import socket
from types import FrameType
from typing import Literal

import uvicorn
from pydantic import ValidationError

from ukedge import config, paths, serverlog
from ukedge.controller._client import CERT_ENV, TOKEN_ENV, URL_ENV
from ukedge.controller._controller import Controller
from ukedge.controller._serve import server_config as controller_config
from ukedge.controller._settings import ControllerSettings
from ukedge.controller._tokens import create_token
from ukedge.errors import ControllerError, UsageError
from ukedge.host.agent import Agent, AgentSettings, build_app, ensure_token, open_listeners
from ukedge.host.link import DesiredState, load_enrolment
from ukedge.hub import HubSettings, create_app, open_hub
from ukedge.hub import server_config as hub_config
from ukedge.server import tcp_listener
from ukedge.server import uvicorn_config as agent_config
from ukedge.validation import validation_message

__all__ = ["UpInfo", "UpSettings", "up"]

log = logging.getLogger(__name__)

#: Seconds each server gets to start, and the agent to reach the controller once.
_START_CEILING_S = 120.0
#: Seconds a server gets to finish its requests and its lifespan on the way out.
_STOP_CEILING_S = 60.0


@dataclass(frozen=True)
class UpSettings:
    """What ``ukedge up`` is told; ``data_dir`` None: each server's default directory."""

    data_dir: Path | None = None
    controller_addr: str = "127.0.0.1:7700"
    hub_addr: str = "127.0.0.1:5000"
    agent_addr: str = "127.0.0.1:7600"
    #: The local node's name (default: this machine's host name) and labels.
    node_name: str | None = None
    labels: dict[str, str] | None = None
    log_format: Literal["json", "text"] = "text"


@dataclass(frozen=True)
class UpInfo:
    """Where the three servers are, once all are ready."""

    controller_url: str
    hub: str
    agent_url: str
    agent_socket: Path
    node_name: str
    controller_dir: Path
    #: Whether the CLI here finds the controller's token and certificate without variables.
    default_files: bool

    def exports(self) -> list[str]:
        """Shell lines that point the CLI at these servers."""
        lines = []
        if not self.default_files or self.controller_url != "https://127.0.0.1:7700":
            lines.append(f"export {URL_ENV}={self.controller_url}")
        if not self.default_files:
            lines += [
                f"export {TOKEN_ENV}=$(cat {self.controller_dir / 'admin.token'})",
                f"export {CERT_ENV}={self.controller_dir / 'tls.crt'}",
            ]
        lines.append(f"export UKEDGE_HOST=unix://{self.agent_socket}")
        return lines


def _local(addr: str) -> str:
    """``HOST:PORT`` to connect to a server listening on ``addr`` from this machine."""
    host, port = config.split_listen_addr(addr)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _migration_host(addr: str) -> str:
    """Where other nodes reach the agent's migration listener (on the API's address): that
    address, or the host's name when it listens on every address."""
    host, _ = config.split_listen_addr(addr)
    if host in ("0.0.0.0", "::", ""):
        return platform.node() or "127.0.0.1"
    return host


class _ServerThread:
    """One uvicorn server in a thread with its own event loop (signals are the caller's)."""

    def __init__(self, name: str, cfg: uvicorn.Config, sockets: list[socket]) -> None:
        self.name = name
        self.server = uvicorn.Server(cfg)
        self._sockets = sockets
        self.thread = threading.Thread(target=self._run, name=f"ukedge-up-{name}", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=self._sockets)
        except BaseException:  # uvicorn exits the thread with SystemExit when start-up fails
            log.exception("the %s server stopped", self.name)
        finally:
            for sock in self._sockets:
                sock.close()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + _START_CEILING_S
        while not self.server.started:
            if not self.thread.is_alive():
                raise ControllerError(f"the {self.name} did not start (see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise ControllerError(f"the {self.name} did not start in {_START_CEILING_S:g} s")
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.ident is not None:
            self.thread.join(_STOP_CEILING_S)


class _Signals:
    """SIGINT and SIGTERM set :attr:`stop`; the first one only: a second quits at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.stop.set()
        signal.signal(signum, signal.SIG_DFL)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _settings(settings: UpSettings) -> tuple[ControllerSettings, HubSettings, AgentSettings]:
    base = settings.data_dir or paths.home()
    centre = ControllerSettings(
        data_dir=base / "controller",
        addr=config.ListenAddr(settings.controller_addr),
        log_format=settings.log_format,
        access_log=False,
    )
    hub_settings = HubSettings(
        data_dir=base / "hub",
        addr=config.ListenAddr(settings.hub_addr),
        log_format=settings.log_format,
        access_log=False,
    )
    agent_values: dict[str, object] = {
        "data_dir": base / "agent",
        "addr": settings.agent_addr,
        "hub": _local(hub_settings.addr),
        "controller": f"https://{_local(centre.addr)}",
        "log_format": settings.log_format,
        "access_log": False,
        "labels": settings.labels or {},
        # The local node takes part in moves: nodes that join later can drain onto it.
        "migration_host": _migration_host(settings.agent_addr),
    }
    if settings.node_name:
        agent_values["name"] = settings.node_name
    agent_settings = AgentSettings.model_validate(agent_values)
    return centre, hub_settings, agent_settings


def up(settings: UpSettings, *, on_ready: Callable[[UpInfo], None]) -> None:
    """Run the three servers until SIGINT or SIGTERM (blocks); ``on_ready`` is called once the
    agent has reached the controller. Raises :class:`UsageError` for an address in use (nothing
    is started then)."""
    try:
        centre, hub_settings, agent_settings = _settings(settings)
    except ValidationError as exc:
        raise UsageError(f"ukedge up: {validation_message(exc)}") from None
    controller_url = f"https://{_local(centre.addr)}"

    # Every address first: one in use fails the whole start before anything runs.
    sockets: list[socket] = []
    try:
        sockets.append(tcp_listener(centre.addr.host, centre.addr.port))
        sockets.append(tcp_listener(hub_settings.addr.host, hub_settings.addr.port))
        sockets += open_listeners(agent_settings)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    controller_socket, hub_socket, agent_sockets = sockets[0], sockets[1], sockets[2:]
    serverlog.configure(settings.log_format)

    signals = _Signals()
    servers: list[_ServerThread] = []
    controller: Controller | None = None
    agent: Agent | None = None
    agent_server: _ServerThread | None = None
    try:
        controller = Controller(centre)
        hub = open_hub(hub_settings)
        servers.append(
            _ServerThread("controller", controller_config(controller), [controller_socket])
        )
        servers.append(
            _ServerThread(
                "hub", hub_config(hub_settings, create_app(hub_settings, hub)), [hub_socket]
            )
        )
        for item in servers:
            item.start()
        join_token = None
        if load_enrolment(agent_settings.data_dir) is None:
            join_token = create_token(
                controller.db,
                fingerprint=controller.identity.fingerprint,
                description="ukedge up: its local agent",
                ttl_s=600.0,
                uses=1,
                now=controller.now(),
            ).token
        agent = Agent(agent_settings.model_copy(update={"join_token": join_token}))
        token, _ = ensure_token(agent_settings.token_path)
        agent_server = _ServerThread("agent", agent_config(build_app(agent, token)), agent_sockets)
        servers.append(agent_server)
        agent_server.start()
        _wait_connected(agent, signals.stop)
        if not signals.stop.is_set():
            on_ready(
                UpInfo(
                    controller_url=controller_url,
                    hub=_local(hub_settings.addr),
                    agent_url=f"http://{_local(agent_settings.addr)}",
                    agent_socket=agent_settings.socket_path,
                    node_name=agent_settings.name,
                    controller_dir=centre.data_dir,
                    default_files=settings.data_dir is None,
                )
            )
        while not signals.stop.wait(1.0):
            dead = [item.name for item in servers if not item.alive]
            if dead:
                raise ControllerError(f"the {', '.join(dead)} stopped (see the log above)")
    finally:
        log.info("stopping the deployed instances, then the agent, the hub and the controller")
        if agent is not None:
            _stop_deployed(agent)
        for item in reversed(servers):
            item.stop()
        if agent is not None and (agent_server is None or not agent_server.server.started):
            agent.close()  # its server's lifespan, which closes it, never ran
        if controller is not None:
            controller.close()
        for sock in sockets:
            sock.close()
        agent_settings.socket_path.unlink(missing_ok=True)
        signals.restore()


def _wait_connected(agent: Agent, stop: threading.Event) -> None:
    link = agent.link
    if link is None:  # not possible: the agent was given its controller
        raise UsageError("the local agent is not enrolled with the controller")
    deadline = time.monotonic() + _START_CEILING_S
    while not link.connected and not stop.wait(0.05):
        if time.monotonic() > deadline:
            raise ControllerError(
                f"the local agent did not reach the controller at {link.enrolment.controller} "
                f"in {_START_CEILING_S:g} s"
            )


def _stop_deployed(agent: Agent) -> None:
    """Stop and remove the controller's instances on the agent (their results go to the
    controller first); the desired state on disk is kept, so the next start runs them again."""
    link = agent.link
    if link is None:
        return
    link.stop()
    result = link.applier.apply(DesiredState(generation=0))
    if result.removed:
        log.info("stopped the deployed instances %s", ", ".join(result.removed))
    for name, (_item, error) in result.errors.items():
        log.warning("could not stop the deployed instance %s: %s", name, error)
