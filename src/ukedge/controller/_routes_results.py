"""Results for the operator: a filtered, paged list and a live server-sent-event stream.

The stream's events are ``event: result``, ``id:`` the record's id and ``data:`` its JSON; a
client that reconnects with ``Last-Event-ID`` (or ``after_id``) resumes after that record, so
nothing is missed or repeated across reconnects. A comment line every 15 s of silence keeps
proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from ukedge.controller._controller import Controller
from ukedge.controller._models import ResultRecordOut
from ukedge.controller._results import ResultQuery, query_results, tail_cursor
from ukedge.errors import ControllerError

__all__ = ["results_router"]

#: Seconds between polls of the table for records other controller processes stored.
POLL_S = 0.5
_KEEPALIVE_S = 15.0
_PAGE = 500


def _resume_from(after_id: int, last_event_id: str | None) -> int:
    if last_event_id is None or not last_event_id.strip():
        return after_id
    if not last_event_id.strip().isdigit():
        raise ControllerError(
            f"Last-Event-ID {last_event_id!r} is not a result id (a non-negative integer)",
            status=400,
        )
    return max(after_id, int(last_event_id))


def results_router(controller: Controller, admin: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(dependencies=[Depends(admin)], tags=["results"])
    db = controller.db

    @router.get("/v1/results", response_model=list[ResultRecordOut])
    def results(
        deployment: str | None = None,
        node: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_id: int = Query(default=0, ge=0),
        limit: int = Query(default=1000, ge=1, le=10_000),
    ) -> list[ResultRecordOut]:
        """Results matching the filters (``since``/``until``: the record's own time), oldest
        first, with ids above ``after_id`` (pass the last id seen to read the next page)."""
        # An empty filter (``?deployment=``, as a client passing None may send it) is no filter.
        query = ResultQuery(
            deployment=deployment or None, node=node or None, since=since, until=until
        )
        return query_results(db, query, after_id=after_id, limit=limit)

    @router.get("/v1/results/stream", response_class=StreamingResponse)
    async def stream(
        request: Request,
        deployment: str | None = None,
        node: str | None = None,
        since: float | None = None,
        after_id: int = Query(default=0, ge=0),
        tail: int | None = Query(default=None, ge=0, le=10_000),
    ) -> StreamingResponse:
        """Server-sent events: stored records after ``after_id`` (or ``Last-Event-ID``), then
        each new one as it arrives. ``tail=N`` starts with only the newest N stored records
        (the dashboard's recent past); a ``Last-Event-ID`` still resumes exactly."""
        last_event_id = request.headers.get("last-event-id")
        cursor = _resume_from(after_id, last_event_id)
        query = ResultQuery(deployment=deployment or None, node=node or None, since=since)
        if tail is not None and not (last_event_id or "").strip():
            cursor = max(cursor, await asyncio.to_thread(tail_cursor, db, query, tail))

        async def events() -> AsyncIterator[str]:
            nonlocal cursor
            quiet_since = time.monotonic()
            yield ": ukedge results\n\n"
            while True:
                page = await asyncio.to_thread(
                    query_results, db, query, after_id=cursor, limit=_PAGE
                )
                for record in page:
                    cursor = record.id
                    yield f"id: {record.id}\nevent: result\ndata: {record.model_dump_json()}\n\n"
                if page:
                    quiet_since = time.monotonic()
                    if len(page) == _PAGE:
                        continue
                elif time.monotonic() - quiet_since > _KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                await controller.notifier.wait(POLL_S)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
