"""The agent's streams: an instance's console or results (``/v1/instances/{key}/logs``) and the
node's instance events (``/v1/events``, server-sent events).

Both poll on the event loop, a worker thread only for each short read, so a client that goes
away frees everything within a poll and many followers do not starve the API of threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ukedge.host._node import LocalNode
from ukedge.host._service import OutputStream
from ukedge.host.agent._errors import responses

__all__ = ["streams_router"]

_KEEPALIVE_S = 10.0
_LOG_POLL_S = 0.05
_EVENT_POLL_S = 0.05


def streams_router(node: LocalNode, prefix: str) -> APIRouter:
    """The routes under ``prefix`` (the API version's, ``/v1``)."""
    router = APIRouter(prefix=prefix, tags=["instances"])

    @router.get(
        "/instances/{key}/logs",
        response_class=StreamingResponse,
        summary="Console or results bytes from an offset; with follow, until the instance ends",
        responses=responses(404),
    )
    async def instance_logs(
        key: str,
        stream: OutputStream = "console",
        follow: bool = False,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> StreamingResponse:
        instance = await anyio.to_thread.run_sync(node.get, key)

        def read_from(start: int) -> tuple[bytes, bool]:
            # Whether it still runs is asked before reading, so the last output is never lost.
            active = node.get(instance.id).state.active
            data = b"".join(node.follow(instance.id, stream, follow=False, offset=start))
            return data, active

        async def chunks() -> AsyncIterator[bytes]:
            position = offset
            while True:
                data, active = await anyio.to_thread.run_sync(read_from, position)
                if data:
                    position += len(data)
                    yield data
                if not follow or not active:
                    return
                if not data:
                    await asyncio.sleep(_LOG_POLL_S)

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @router.get(
        "/events",
        response_class=EventSourceResponse,
        summary="Instance state changes as server-sent events",
        responses=responses(events=True),
    )
    async def events(request: Request) -> AsyncIterator[ServerSentEvent]:
        """A ``ready`` event once subscribed (nothing after it is missed), then ``instance``
        events."""
        with node.bus.subscribe() as subscription:
            yield ServerSentEvent(event="ready", data={})
            quiet_since = time.monotonic()
            while not await request.is_disconnected():
                # Polled without a worker thread: one per subscriber would starve the API.
                event = subscription.get(0)
                if event is not None:
                    quiet_since = time.monotonic()
                    yield ServerSentEvent(event="instance", data=event.model_dump(mode="json"))
                    continue
                if time.monotonic() - quiet_since > _KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ServerSentEvent(comment="keepalive")
                await asyncio.sleep(_EVENT_POLL_S)

    return router
