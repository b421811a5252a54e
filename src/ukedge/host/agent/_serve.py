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
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ukedge import paths, server, serverlog
from ukedge.errors import InstanceError, UsageError
from ukedge.host.agent._agent import Agent, AgentSettings
from ukedge.host.agent._api import API_PREFIX, create_agent_app
from ukedge.host.agent._metrics import AgentMetrics
from ukedge.host.agent._routes_migrations import migrations_router
from ukedge.host.ondemand import OnDemandController

__all__ = [
    "MAX_BODY_BYTES",
    "BearerAuth",
    "build_app",
    "ensure_token",
    "open_listeners",
    "serve",
]

log = logging.getLogger(__name__)

#: Paths anyone who reaches the port may read: liveness for supervisors and load balancers.
_OPEN_PATHS = frozenset({"/healthz"})
#: The largest request body the API reads (a RunRequest at its limits is far smaller).
MAX_BODY_BYTES = 1 << 20


def ensure_token(path: Path) -> tuple[str, bool]:
    """The agent's bearer token, made (0600, atomically) when missing; ``(token, made_now)``."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; made it 0600 (rotate the token)", path)
            path.chmod(0o600)
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    paths.write_private(path, token + "\n")
    return token, True


class BearerAuth:
    """Requires ``Authorization: Bearer <token>`` on TCP; Unix-socket requests pass."""

    def __init__(self, app: ASGIApp, token: str, socket_path: Path) -> None:
        self.app = app
        self._token = token.encode()
        self._socket = str(socket_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        verdict = self._verdict(scope)
        if verdict is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await _send_error(
                send,
                401,
                "AgentError",
                f"{verdict}: pass --token or set UKEDGE_HOST_TOKEN (the agent printed it on "
                "first start and keeps it in <data>/token)",
                [(b"www-authenticate", b'Bearer realm="ukedge-agent"')],
            )
        else:
            await send({"type": "websocket.close", "code": 1008})

    def _verdict(self, scope: Scope) -> str | None:
        """None when the request may pass, else why not."""
        server = scope.get("server")
        if server is not None and server[1] is None and server[0] == self._socket:
            return None
        if scope["type"] == "http" and scope["path"] in _OPEN_PATHS:
            return None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                ):
                    return None
                return "the token given is not this agent's"
        return "this agent needs its token"


def _error_body(kind: str) -> Callable[[str], bytes]:
    """The agent's error shape (``ApiError``) for a refusal made before the app runs."""

    def render(message: str) -> bytes:
        return json.dumps({"error": {"kind": kind, "message": message}}).encode()

    return render


async def _send_error(
    send: Send, status: int, kind: str, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = _error_body(kind)(message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
    except OSError as exc:
        listener.close()
        raise UsageError(
            f"cannot listen on {path}: {exc.strerror or exc} (a socket path may have at most "
            "107 bytes; pick a shorter --socket or --data)"
        ) from exc
    finally:
        os.umask(old)
    listener.listen(128)
    return listener


def build_app(agent: Agent, token: str) -> ASGIApp:
    """The API with the agent's background work tied to the server's lifespan."""
    app: FastAPI = create_agent_app(
        agent.node,
        metrics=AgentMetrics(agent.node, agent.spool, agent.link),
        access_log=agent.settings.access_log,
    )
    app.include_router(migrations_router(agent.migrations, API_PREFIX))

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
        agent.start_link()
        try:
            yield
        finally:
            agent.node.on_demand = None
            await ondemand.aclose()
            agent.close()

    app.router.lifespan_context = lifespan
    limited = server.BodyLimit(app, limit=MAX_BODY_BYTES, error=_error_body("UsageError"))
    return BearerAuth(limited, token, agent.settings.socket_path)


def open_listeners(settings: AgentSettings) -> list[socket.socket]:
    """The agent's Unix socket and (when it has an address) its TCP port, both listening."""
    listeners = [_unix_listener(settings.socket_path)]
    if settings.addr:
        try:
            listeners.append(server.tcp_listener(settings.addr.host, settings.addr.port))
        except BaseException:
            listeners[0].close()
            settings.socket_path.unlink(missing_ok=True)
            raise
    return listeners


def serve(settings: AgentSettings, token: str) -> None:
    """Run the agent until interrupted (blocks). Instances keep running after it stops."""
    serverlog.configure(settings.log_format)
    agent = Agent(settings)
    listeners = open_listeners(settings)
    log.info(
        "agent %s serving on %s%s",
        settings.name,
        settings.socket_path,
        f" and http://{settings.addr}" if settings.addr else "",
    )
    try:
        server.run(build_app(agent, token), listeners)
    finally:
        settings.socket_path.unlink(missing_ok=True)
