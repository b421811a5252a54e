"""The agent API's one error shape: ``{"error": {"kind", "message"}}`` with the status each
ukedge error class maps to, and the OpenAPI description of those errors per route.

Errors keep their ukedge class across the wire, so the remote CLI raises the same error, with
the same message and exit code, as the local one.
"""

from __future__ import annotations

from typing import Any

from ukedge.errors import (
    AdmissionError,
    DigestMismatchError,
    ImageError,
    ImageInUseError,
    InstanceError,
    MachineError,
    NoSuchInstanceError,
    NotFoundError,
    RegistryError,
    SignatureError,
    UkedgeError,
    UsageError,
)
from ukedge.host._models import ErrorResponse

__all__ = ["error_body", "error_status", "responses"]

#: Most specific first: the first class an error is an instance of decides its status.
_STATUS: list[tuple[type[UkedgeError], int]] = [
    (NoSuchInstanceError, 404),
    (AdmissionError, 409),
    (UsageError, 400),
    (DigestMismatchError, 502),
    (SignatureError, 403),
    (ImageInUseError, 409),
    (ImageError, 404),
    (InstanceError, 409),
    (NotFoundError, 404),
    (RegistryError, 502),
    (MachineError, 500),
]


def error_status(exc: UkedgeError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message}}


#: What each error status means on this API (docs/api.md says the same).
_ERRORS: dict[int, str] = {
    400: "Bad input the schema cannot express (a body that is not JSON, a reference that does "
    "not parse)",
    401: "No bearer token, or not this agent's (TCP only; the Unix socket needs none)",
    403: "The node's signature policy refused the image (unsigned, or not by a trusted key)",
    404: "No such instance or image",
    409: "Admission refused, host port taken, instance in the wrong state, or image in use",
    413: "Request body over 1 MiB (refused unread)",
    422: "A field is invalid, or unknown; the message names it",
    500: "The hypervisor failed",
    502: "The registry failed, or sent a blob that does not match its digest",
}


def responses(*statuses: int, events: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: the given statuses plus those every route may give.

    ``events``: the route answers with server-sent events, but its errors are JSON like every
    other route's (FastAPI would describe them in the route's own media type).
    """
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    return {
        status: (
            {"description": _ERRORS[status], "content": json_error}
            if events
            else {"model": ErrorResponse, "description": _ERRORS[status]}
        )
        for status in sorted({401, 422, 500, *statuses})
    }
