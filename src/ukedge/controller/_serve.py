"""``ukedge controller serve``: the API over HTTPS, with the reconcile loop in its lifespan.

HTTPS always: nodes enrol by pinning the certificate's fingerprint (the join token carries it),
so there is no plain-HTTP mode to fall back to. The certificate is the controller's own,
self-signed, made at first start (see ``_identity``).
"""

from __future__ import annotations

import logging

import uvicorn

from ukedge import server, serverlog
from ukedge.controller._api import create_controller_app
from ukedge.controller._controller import Controller
from ukedge.controller._settings import ControllerSettings

__all__ = ["serve", "server_config"]

log = logging.getLogger(__name__)


def server_config(controller: Controller) -> uvicorn.Config:
    """How uvicorn serves the controller's API (with its loop): HTTPS on its own identity."""
    return server.uvicorn_config(
        create_controller_app(controller),
        ssl_certfile=str(controller.identity.cert_path),
        ssl_keyfile=str(controller.identity.key_path),
    )


def serve(settings: ControllerSettings) -> None:
    """Run the controller until SIGINT or SIGTERM (blocks)."""
    serverlog.configure(settings.log_format)
    controller = Controller(settings)
    try:
        listener = server.tcp_listener(settings.addr.host, settings.addr.port)
        identity = controller.identity
        log.info(
            "controller serving on https://%s (certificate SHA-256 %s, database %s)",
            settings.addr,
            identity.fingerprint,
            controller.db.shown,
        )
        config = server_config(controller)
        try:
            uvicorn.Server(config).run(sockets=[listener])
        finally:
            listener.close()
    finally:
        controller.close()
