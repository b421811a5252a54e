"""Who may call what: the operator's admin token, or a node's own credential (both bearer).

The admin token is compared in constant time; node credentials are checked against their hash
by :func:`ukedge.controller._nodes.authenticate_node`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from ukedge.errors import ControllerError

__all__ = ["admin_guard", "bearer"]


def bearer(request: Request) -> str:
    """The bearer credential of a request ('' when none)."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


def admin_guard(admin_token: str) -> Callable[[Request], None]:
    """A FastAPI dependency refusing (401) requests without the admin token."""
    token = admin_token.encode()

    def admin(request: Request) -> None:
        given = bearer(request)
        if not given:
            raise ControllerError(
                "this route needs the controller's admin token: set UKEDGE_CONTROLLER_TOKEN "
                "(the controller keeps it in <data>/admin.token)",
                status=401,
            )
        if not hmac.compare_digest(given.encode(), token):
            raise ControllerError(
                "the token given is not this controller's admin token", status=401
            )

    return admin
