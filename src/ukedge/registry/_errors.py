"""Turning registry answers and transport failures into :class:`~ukedge.errors.RegistryError`.

A registry reports failures as ``{"errors": [{"code": ..., "message": ..., "detail": ...}]}``
(distribution spec, "Error Codes"); the first error names the problem. The message we raise says
what the user can do about it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import httpx

from ukedge.errors import AuthenticationError, NotFoundError, RegistryError

__all__ = ["error_from_response", "raise_if_cancelled", "registry_errors", "transport_errors"]

_NOT_FOUND_CODES = frozenset(
    {"BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UPLOAD_UNKNOWN"}
)


def registry_errors(response: httpx.Response) -> list[tuple[str, str]]:
    """``(code, message)`` pairs of a registry error body; empty when it is not one."""
    try:
        body = json.loads(response.content or b"null")
    except (ValueError, httpx.ResponseNotRead):
        return []
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return []
    pairs = []
    for item in body["errors"]:
        if isinstance(item, dict):
            pairs.append((str(item.get("code", "UNKNOWN")), str(item.get("message", ""))))
    return pairs


def error_from_response(response: httpx.Response, what: str, registry: str) -> RegistryError:
    """The error to raise for an unexpected ``response`` to the request doing ``what``.

    The response body must have been read (``response.read()``) for its error codes to count.
    """
    status = response.status_code
    errors = registry_errors(response)
    code, message = errors[0] if errors else (None, response.reason_phrase)
    said = f"{code}: {message}" if code else f"HTTP {status} {message}".rstrip()
    if status == 401 or code == "UNAUTHORIZED":
        return AuthenticationError(
            f"{what}: {registry} wants valid credentials ({said}); run `ukedge login {registry}`",
            code=code,
            status=status,
        )
    if status == 403 or code == "DENIED":
        return AuthenticationError(
            f"{what}: {registry} denied access ({said}); log in as a user allowed to do this "
            f"with `ukedge login {registry}`",
            code=code,
            status=status,
        )
    if status == 404 or code in _NOT_FOUND_CODES:
        hint = ""
        if code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN"):
            hint = (
                f"; check the name and tag (`ukedge tags {registry}/NAME`, "
                f"`ukedge search TERM --registry {registry}`)"
            )
        return NotFoundError(
            f"{what}: not found on {registry} ({said}){hint}", code=code, status=status
        )
    if status == 429 or code == "TOOMANYREQUESTS":
        return RegistryError(
            f"{what}: {registry} is rate limiting us ({said}); try again later",
            code=code,
            status=status,
        )
    return RegistryError(f"{what}: {registry} answered {said}", code=code, status=status)


@contextlib.contextmanager
def transport_errors(registry: str, base_url: str, what: str) -> Iterator[None]:
    """Re-raise httpx's transport failures as a :class:`RegistryError` that names the registry."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RegistryError(
            f"{what}: {registry} ({base_url}) timed out: {exc or type(exc).__name__}"
        ) from exc
    except httpx.TransportError as exc:
        text = str(exc) or type(exc).__name__
        hint = "is it running, and is the address right?"
        if base_url.startswith("https://") and (
            "SSL" in text or "TLS" in text or "certificate" in text
        ):
            hint = (
                "if it serves plain HTTP, pass --insecure or list it in UKEDGE_INSECURE_REGISTRIES"
            )
        raise RegistryError(
            f"{what}: cannot reach {registry} at {base_url} ({text}); {hint}"
        ) from exc


def raise_if_cancelled(cancel: threading.Event | None, what: str) -> None:
    """Stop a transfer between pieces once its caller has set ``cancel``."""
    if cancel is not None and cancel.is_set():
        raise RegistryError(f"{what}: cancelled")
