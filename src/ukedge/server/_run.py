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

import uvicorn
from starlette.types import ASGIApp

from ukedge.errors import UsageError

__all__ = ["run", "tcp_listener"]

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


def run(app: ASGIApp, listeners: Sequence[socket.socket]) -> None:
    """Serve ``app`` on ``listeners`` until SIGINT or SIGTERM (blocks), then close them.

    The app's lifespan runs around the serving (``lifespan="on"``: a failing start-up stops the
    server instead of serving without its background work).
    """
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        lifespan="on",
    )
    try:
        uvicorn.Server(config).run(sockets=list(listeners))
    finally:
        for listener in listeners:
            listener.close()
