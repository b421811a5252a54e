"""OCI distribution error codes, and the one place ukedge errors become HTTP responses.

Handlers raise :class:`DistributionError` (a :class:`~ukedge.errors.HubError`) with a spec code;
anything else from the ukedge tree is mapped by :func:`to_response`, so the wire format
``{"errors": [{"code", "message", "detail"}]}`` is written in exactly one function. Any other
exception is a bug: :func:`internal_error_response` logs it and still answers in that format.
"""

from __future__ import annotations

import enum
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ukedge.errors import DigestMismatchError, HubError, UkedgeError, UsageError
from ukedge.hub.storage import InvalidPathError, PathNotFoundError, StorageError

__all__ = [
    "Code",
    "DistributionError",
    "error_handler",
    "internal_error_handler",
    "internal_error_response",
    "to_response",
]

log = logging.getLogger(__name__)


class Code(enum.Enum):
    """Spec error code → (HTTP status, default message)."""

    BLOB_UNKNOWN = (404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = (400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = (404, "blob upload unknown to registry")
    DIGEST_INVALID = (400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (404, "manifest references a manifest or blob unknown to registry")
    MANIFEST_INVALID = (400, "manifest invalid")
    MANIFEST_UNKNOWN = (404, "manifest unknown to registry")
    NAME_INVALID = (400, "invalid repository name")
    NAME_UNKNOWN = (404, "repository name not known to registry")
    SIZE_INVALID = (400, "provided length did not match content length")
    UNAUTHORIZED = (401, "authentication required")
    DENIED = (403, "requested access to the resource is denied")
    UNSUPPORTED = (405, "the operation is unsupported")
    PAGINATION_NUMBER_INVALID = (400, "invalid number of results requested")
    TOOMANYREQUESTS = (429, "too many requests")
    RANGE_INVALID = (416, "requested range not satisfiable")
    UNKNOWN = (500, "unknown error")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]


class DistributionError(HubError):
    """A request the distribution spec answers with an error code.

    ``status`` overrides the code's default where the spec asks for another (413 for a manifest
    too large, 416 for a chunk out of order); ``headers`` travel with the response
    (``WWW-Authenticate``, ``Range``).
    """

    def __init__(
        self,
        code: Code,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}
        super().__init__(message or code.message)


def _classify(exc: UkedgeError) -> DistributionError:
    if isinstance(exc, DistributionError):
        return exc
    if isinstance(exc, DigestMismatchError):
        return DistributionError(
            Code.DIGEST_INVALID, str(exc), detail={"expected": exc.expected, "actual": exc.actual}
        )
    if isinstance(exc, PathNotFoundError):
        return DistributionError(Code.BLOB_UNKNOWN, "blob content missing from storage")
    if isinstance(exc, InvalidPathError | UsageError):
        return DistributionError(Code.UNSUPPORTED, str(exc), status=400)
    if isinstance(exc, StorageError):
        log.error("storage failure: %s", exc)
        return DistributionError(Code.UNKNOWN, str(exc))
    log.error("unhandled hub error: %s", exc)
    return DistributionError(Code.UNKNOWN, str(exc))


def to_response(exc: UkedgeError, *, head: bool = False) -> Response:
    """The spec's JSON error body for ``exc`` (no body for HEAD, as HTTP wants)."""
    err = _classify(exc)
    body = json.dumps(
        {"errors": [{"code": err.code.name, "message": str(err), "detail": err.detail}]}
    ).encode()
    headers = dict(err.headers)
    if head:
        headers["Content-Length"] = str(len(body))
        return Response(None, err.status, headers=headers, media_type="application/json")
    return Response(body, err.status, headers=headers, media_type="application/json")


async def error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every :class:`UkedgeError`."""
    assert isinstance(exc, UkedgeError)
    return to_response(exc, head=request.method == "HEAD")


def internal_error_response(exc: BaseException, request: Request) -> Response:
    """A bug's answer: logged with its traceback, answered as UNKNOWN (500) in the spec's JSON."""
    log.error(
        "unhandled error in %s %s",
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    err = DistributionError(
        Code.UNKNOWN, f"internal error ({type(exc).__name__}); the hub logged the details"
    )
    return to_response(err, head=request.method == "HEAD")


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler for any exception no other handler took (registered for Exception)."""
    return internal_error_response(exc, request)
