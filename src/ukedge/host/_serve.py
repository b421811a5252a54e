"""``ukedge host serve``: the agent's REST API on TCP (bearer token) and a Unix socket.

The token is made on first start and kept in ``<data>/token`` (mode 0600); the CLI prints it
once, when it is made. The Unix socket needs no token: like ``docker.sock`` its file mode
(0600, the agent's user) is the access control. Both listeners are served by one uvicorn
server, so they share one event loop and one agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ukedge import serverlog
from ukedge.errors import InstanceError, UsageError
from ukedge.host._agent import Agent, AgentSettings
from ukedge.host._api import create_agent_app
from ukedge.host._ondemand import OnDemandController

__all__ = ["BearerAuth", "ensure_token", "serve"]

log = logging.getLogger(__name__)

#: Paths anyone who reaches the port may read: liveness for supervisors and load balancers.
_OPEN_PATHS = frozenset({"/healthz"})


def ensure_token(path: Path) -> tuple[str, bool]:
    """The agent's bearer token, made (0600, atomically) when missing; ``(token, made_now)``."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    staging.replace(path)
    return token, True


class BearerAuth:
    """Requires ``Authorization: Bearer <token>`` on TCP; Unix-socket requests pass."""

    def __init__(self, app: ASGIApp, token: str, socket_path: Path) -> None:
        self.app = app
        self._token = token.encode()
        self._socket = str(socket_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = (
            b'{"error": {"kind": "AgentError", "message": "this agent needs its token: '
            b"pass --token or set UKEDGE_HOST_TOKEN (the agent printed it on first start "
            b'and keeps it in <data>/token)"}}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="ukedge-agent"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        server = scope.get("server")
        if server is not None and server[1] is None and server[0] == self._socket:
            return True
        if scope["path"] in _OPEN_PATHS:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                )
        return False


def _unix_listener(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left by an agent that was killed
        else:
            raise UsageError(f"{path} is in use: another agent runs on this data directory")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(128)
    return listener


def _tcp_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    listener.listen(128)
    return listener


def build_app(agent: Agent, token: str) -> ASGIApp:
    """The API with the agent's background work tied to the server's lifespan."""
    app: FastAPI = create_agent_app(agent.node)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        agent.start()
        # On-demand listeners share the server's loop; the first sync re-opens the listeners
        # of an earlier run and adopts their VMs that still run.
        ondemand = OnDemandController(agent.manager, loop=asyncio.get_running_loop())
        agent.node.on_demand = ondemand
        try:
            await ondemand.async_sync()
        except InstanceError as exc:
            log.warning("some on-demand listeners could not open: %s", exc)
        try:
            yield
        finally:
            agent.node.on_demand = None
            await ondemand.aclose()
            agent.close()

    app.router.lifespan_context = lifespan
    return BearerAuth(app, token, agent.settings.socket_path)


def serve(settings: AgentSettings, token: str) -> None:
    """Run the agent until interrupted (blocks). Instances keep running after it stops."""
    serverlog.configure(settings.log_format)
    agent = Agent(settings)
    listeners = [_unix_listener(settings.socket_path)]
    if settings.addr:
        listeners.append(_tcp_listener(settings.host, settings.port))
    log.info(
        "agent %s serving on %s%s",
        settings.name,
        settings.socket_path,
        f" and http://{settings.addr}" if settings.addr else "",
    )
    config = uvicorn.Config(
        build_app(agent, token),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        lifespan="on",
    )
    try:
        uvicorn.Server(config).run(sockets=listeners)
    finally:
        for listener in listeners:
            listener.close()
        settings.socket_path.unlink(missing_ok=True)
