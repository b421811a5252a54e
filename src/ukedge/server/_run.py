"""Running a ukedge server: the listening sockets and uvicorn, set up once for every server.

The server binds its TCP socket itself, before uvicorn starts, so that a port in use is a
:class:`UsageError` naming the address (uvicorn would log it and exit), and so that one uvicorn
server can serve several listeners (the agent's Unix socket and TCP port share one event loop
and one app). uvicorn's own logging stays at warnings: requests are logged by the kit's access
log, in the server's structured format.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from ukedge.errors import UsageError

__all__ = ["run", "tcp_listener", "uvicorn_config"]

#: Seconds an idle keep-alive connection stays open (uvicorn's 5 s makes clients that poll
#: every few seconds reconnect each time).
KEEP_ALIVE = 30


def tcp_listener(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a ``:``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server on that "
            "port? choose another --addr)"
        ) from exc
    listener.listen(backlog)
    return listener


def uvicorn_config(
    app: ASGIApp, *, trusted_proxies: Sequence[str] = (), **overrides: Any
) -> uvicorn.Config:
    """How uvicorn runs every ukedge server (tests that serve one in-process use it too).

    uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise, which let any
    local client pick the address a login throttle or an access log sees: only the proxies the
    operator names (``trusted_proxies``) are believed, none by default.
    """
    values: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": KEEP_ALIVE,
        "lifespan": "on",
        "proxy_headers": bool(trusted_proxies),
        "forwarded_allow_ips": list(trusted_proxies) or "",
    }
    values.update(overrides)
    return uvicorn.Config(app, **values)


def run(
    app: ASGIApp, listeners: Sequence[socket.socket], *, trusted_proxies: Sequence[str] = ()
) -> None:
    """Serve ``app`` on ``listeners`` until SIGINT or SIGTERM (blocks), then close them.

    The app's lifespan runs around the serving (``lifespan="on"``: a failing start-up stops the
    server instead of serving without its background work).
    """
    config = uvicorn_config(app, trusted_proxies=trusted_proxies)
    try:
        uvicorn.Server(config).run(sockets=list(listeners))
    finally:
        for listener in listeners:
            listener.close()
