"""``/v1/images``: the node's image cache; a pull streams its progress as server-sent events."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ukedge.errors import UkedgeError, UsageError
from ukedge.host._models import ImageSummary, PruneReport, PullRequest, RunRequest
from ukedge.host._node import LocalNode
from ukedge.host.agent._errors import responses
from ukedge.registry import BlobOutcome

__all__ = ["images_router"]

_PROGRESS_EVERY_S = 0.1


def images_router(node: LocalNode, prefix: str) -> APIRouter:
    """The routes under ``prefix`` (the API version's, ``/v1``)."""
    router = APIRouter(prefix=f"{prefix}/images", tags=["images"])

    @router.get("", response_model=list[ImageSummary], responses=responses())
    def list_images() -> list[ImageSummary]:
        return node.images()

    @router.get("/inspect", responses=responses(400, 404))
    def inspect_image(
        ref: Annotated[str, Query(min_length=1, max_length=512)],
        platform: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Any:
        """A stored image's manifest and config (of a multi-platform image: the node's
        platform, or ``platform``)."""
        return node.inspect_image(ref, platform)

    @router.delete("", response_model=list[str], responses=responses(400, 404, 409))
    def remove_image(
        ref: Annotated[str, Query(min_length=1, max_length=512)], force: bool = False
    ) -> list[str]:
        return node.remove_image(ref, force=force)

    @router.post("/prune", response_model=PruneReport, responses=responses(409))
    def prune_images() -> PruneReport:
        return node.prune_images()

    @router.post(
        "/pull",
        response_class=EventSourceResponse,
        summary="Pull an image; progress as server-sent events",
        responses=responses(400, 413, events=True),
    )
    async def pull_image(request: Request, body: PullRequest) -> AsyncIterator[ServerSentEvent]:
        """Events: ``start`` {digest, label, total}, ``progress`` {digest, completed},
        ``finish`` {digest, outcome}; then ``done`` (the image summary) or ``error``
        {kind, message}. Closing the stream cancels the pull."""
        events: queue.Queue[ServerSentEvent | None] = queue.Queue()
        cancel = threading.Event()
        progress = _QueueProgress(events, cancel)

        def work() -> None:
            try:
                summary = node.pull(body.ref, progress=progress)
                events.put(ServerSentEvent(event="done", data=summary.model_dump(mode="json")))
            except UkedgeError as exc:
                events.put(
                    ServerSentEvent(
                        event="error", data={"kind": type(exc).__name__, "message": str(exc)}
                    )
                )
            finally:
                events.put(None)

        worker = threading.Thread(target=work, name="ukedge-pull", daemon=True)
        worker.start()
        try:
            while True:
                event = await anyio.to_thread.run_sync(_next, events)
                if event is _IDLE:
                    if await request.is_disconnected():
                        return
                    continue
                if event is None:
                    return
                assert isinstance(event, ServerSentEvent)
                yield event
        finally:
            cancel.set()

    @router.post("/prewarm", responses=responses(400, 404, 409, 413, 502))
    def prewarm(request: RunRequest) -> dict[str, str]:
        return {"snapshot": node.prewarm(request)}

    return router


_IDLE = object()


def _next(events: queue.Queue[ServerSentEvent | None]) -> object:
    try:
        return events.get(timeout=1.0)
    except queue.Empty:
        return _IDLE


class _QueueProgress:
    """Pull progress into an SSE queue; ``progress`` events at most every 100 ms per blob.

    Raising from a callback aborts the pull (see ``TransferProgress``): that is how a client
    that closed the stream cancels it.
    """

    def __init__(self, events: queue.Queue[ServerSentEvent | None], cancel: threading.Event):
        self._events = events
        self._cancel = cancel
        self._last: dict[str, float] = {}

    def _check(self) -> None:
        if self._cancel.is_set():
            raise UsageError("pull cancelled: the client closed the progress stream")

    def start(self, digest: str, label: str, total: int) -> None:
        self._check()
        data = {"digest": digest, "label": label, "total": total}
        self._events.put(ServerSentEvent(event="start", data=data))

    def update(self, digest: str, completed: int) -> None:
        self._check()
        now = time.monotonic()
        if now - self._last.get(digest, 0.0) >= _PROGRESS_EVERY_S:
            self._last[digest] = now
            data = {"digest": digest, "completed": completed}
            self._events.put(ServerSentEvent(event="progress", data=data))

    def finish(self, digest: str, outcome: BlobOutcome) -> None:
        data = {"digest": digest, "outcome": str(outcome)}
        self._events.put(ServerSentEvent(event="finish", data=data))
