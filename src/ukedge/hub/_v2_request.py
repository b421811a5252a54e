"""What the ``/v2/`` API reads from a request beyond its path: byte counts, ranges, pages, and a
body that may stall. Each refusal is the :class:`DistributionError` the spec names (400, 408 or
416), raised before any service is called, so a bad header changes nothing."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ukedge.hub._errors import Code, DistributionError

__all__ = [
    "API_VERSION",
    "MAX_PAGE",
    "byte_range",
    "content_range",
    "idle_bounded",
    "int_header",
    "page",
    "paged",
]

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
# Byte counts are ASCII digits, at most 18 of them: below 2**63 (SQLite's integers) and far
# below the length at which int() refuses a string (4,300 digits), whatever a client sends.
_DIGITS = 18
_RANGE = re.compile(r"^(?:bytes[ =])?([0-9]{1,18})-([0-9]{1,18})$")
_BYTES = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
_COUNT = re.compile(r"^[0-9]{1,18}$")
#: Largest page of ``_catalog`` and ``tags/list`` (``?n=``); more is refused, as distribution does.
MAX_PAGE = 10000


def int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not _COUNT.match(value.strip()):
        raise DistributionError(
            Code.SIZE_INVALID, f"{name} {value[:40]!r} is not a byte count (at most 18 digits)"
        )
    return int(value)


def content_range(request: Request) -> tuple[int | None, int | None]:
    """``(start, length)`` from ``Content-Range: <start>-<end>`` or ``Content-Length``."""
    raw = request.headers.get("content-range")
    length = int_header(request, "content-length")
    if raw is None:
        return None, length
    match = _RANGE.match(raw.strip())
    if not match or int(match[2]) < int(match[1]):
        raise DistributionError(
            Code.RANGE_INVALID, f"Content-Range {raw[:60]!r} is not <start>-<end>", status=416
        )
    start, end = int(match[1]), int(match[2])
    if length is not None and length != end - start + 1:
        raise DistributionError(
            Code.RANGE_INVALID,
            f"Content-Range {raw!r} covers {end - start + 1} bytes, Content-Length says {length}",
            status=416,
        )
    return start, end - start + 1


def page(request: Request) -> tuple[int | None, str | None]:
    raw_n = request.query_params.get("n")
    n: int | None = None
    if raw_n is not None:
        if not _COUNT.match(raw_n) or int(raw_n) > MAX_PAGE:
            raise DistributionError(
                Code.PAGINATION_NUMBER_INVALID,
                f"n={raw_n[:40]!r} must be an integer from 0 to {MAX_PAGE}; "
                "follow the Link header for the next page",
                detail={"n": raw_n[:40], "max": MAX_PAGE},
            )
        n = int(raw_n)
    return n, request.query_params.get("last")


def paged(
    request: Request, items: list[str], n: int | None, key: str, body: dict[str, object]
) -> Response:
    """Trim the n+1 fetched items to n and add ``Link: <…>; rel="next"`` when more remain."""
    headers = dict(API_VERSION)
    if n is not None and len(items) > n:
        items = items[:n]
        if items:
            query = urlencode({"n": n, "last": items[-1]})
            headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    body[key] = items
    return Response(json.dumps(body), 200, headers=headers, media_type="application/json")


def byte_range(request: Request, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte of a blob of ``size`` bytes that ``Range: bytes=…`` asks for;
    None for the whole blob (no header, or one this API does not read: it is ignored)."""
    raw = request.headers.get("range")
    if raw is None:
        return None
    m = _BYTES.match(raw.strip())
    if not (m and (m[1] or m[2])):
        return None
    outside = DistributionError(
        Code.RANGE_INVALID,
        f"range {raw[:60]!r} is outside the blob's {size} bytes",
        status=416,
        headers={"Content-Range": f"bytes */{size}"},
    )
    if max(len(m[1]), len(m[2])) > _DIGITS:
        raise outside
    end = size - 1
    if m[1]:
        start = int(m[1])
        end = min(int(m[2]), size - 1) if m[2] else size - 1
    else:
        start = max(size - int(m[2]), 0)
    if start >= size or end < start:
        raise outside
    return start, end


async def idle_bounded(source: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The request body, failing (408) when no bytes arrive for ``seconds``.

    Without it a client declaring a huge Content-Length that then goes silent would hold its
    upload session's lock for good, and every PATCH, PUT and DELETE on the session would wait
    behind it. The failed chunk is truncated away; the session stays usable.
    """
    chunks = source.__aiter__()
    while True:
        try:
            async with asyncio.timeout(seconds):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise DistributionError(
                Code.SIZE_INVALID,
                f"the request body stalled (nothing for {seconds:g} s); what arrived of this "
                "request was dropped: GET the upload for its offset and resume from there",
                status=408,
            ) from None
        yield chunk
