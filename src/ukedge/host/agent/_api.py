"""The host agent's REST API: one node's instances and images over HTTP (FastAPI).

Routes are thin over :class:`~ukedge.host.NodeService`, so the API does exactly what the local
CLI does. Blocking work (QMP, SQLite, registry transfers) runs in the thread pool; streams
(logs, pull progress, events) are async generators that poll a thread for the next piece, so a
client that goes away frees its thread within a second.

Errors keep their ukedge class across the wire (``{"error": {"kind", "message"}}``), so the
remote CLI raises the same error, with the same message and exit code, as the local one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from ukedge import __version__
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
    UkedgeError,
    UsageError,
)
from ukedge.host._models import (
    ErrorResponse,
    ImageSummary,
    Instance,
    InstanceStats,
    NodeInfo,
    PruneReport,
    PullRequest,
    RunRequest,
)
from ukedge.host._node import LocalNode
from ukedge.host._service import OutputStream
from ukedge.host.agent._metrics import AgentMetrics
from ukedge.registry import BlobOutcome
from ukedge.server import MetricsMiddleware, add_operations
from ukedge.validation import validation_message

__all__ = ["API_PREFIX", "create_agent_app", "error_status"]

API_PREFIX = "/v1"
_access_log = logging.getLogger("ukedge.host.access")
_KEEPALIVE_S = 10.0
_PROGRESS_EVERY_S = 0.1
_LOG_POLL_S = 0.05
_WAIT_POLL_S = 0.2
_EVENT_POLL_S = 0.05

#: Most specific first: the first class an error is an instance of decides its status.
_STATUS: list[tuple[type[UkedgeError], int]] = [
    (NoSuchInstanceError, 404),
    (AdmissionError, 409),
    (UsageError, 400),
    (DigestMismatchError, 502),
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


def _error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message}}


#: What each error status means on this API (docs/api.md says the same).
_ERRORS: dict[int, str] = {
    400: "Bad input the schema cannot express (a body that is not JSON, a reference that does "
    "not parse)",
    401: "No bearer token, or not this agent's (TCP only; the Unix socket needs none)",
    404: "No such instance or image",
    409: "Admission refused, host port taken, instance in the wrong state, or image in use",
    413: "Request body over 1 MiB (refused unread)",
    422: "A field is invalid, or unknown; the message names it",
    500: "The hypervisor failed",
    502: "The registry failed, or sent a blob that does not match its digest",
}


def _errors(*statuses: int, events: bool = False) -> dict[int | str, dict[str, Any]]:
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


def create_agent_app(
    node: LocalNode, *, metrics: AgentMetrics | None = None, access_log: bool = True
) -> FastAPI:
    """The API over ``node``. Authentication is the server's business (see ``_serve``)."""
    app = FastAPI(
        title="ukedge host agent",
        version=__version__,
        description="Runs unikernel images as VMs on one edge node: images, instances, "
        "logs, stats and events.",
    )
    metrics = metrics or AgentMetrics(node)
    app.add_middleware(
        MetricsMiddleware, metrics=metrics.http, access_log=_access_log if access_log else None
    )
    add_operations(app, metrics.registry)

    @app.exception_handler(UkedgeError)
    async def _ukedge_error(_request: Request, exc: UkedgeError) -> JSONResponse:
        return JSONResponse(_error_body(type(exc).__name__, str(exc)), error_status(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body that is not JSON, an unknown route or method) in the
        # one error shape, so a client reads every error the same way.
        kind = "UsageError" if exc.status_code < 500 else "AgentError"
        return JSONResponse(
            _error_body(kind, str(exc.detail)), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_message(exc, whole="body")
        return JSONResponse(_error_body("UsageError", f"invalid request: {problems}"), 422)

    # -- service ---------------------------------------------------------------------------------

    @app.get(f"{API_PREFIX}/node", response_model=NodeInfo, tags=["node"], responses=_errors())
    def node_info() -> NodeInfo:
        return node.info()

    # -- images ----------------------------------------------------------------------------------

    @app.get(
        f"{API_PREFIX}/images",
        response_model=list[ImageSummary],
        tags=["images"],
        responses=_errors(),
    )
    def list_images() -> list[ImageSummary]:
        return node.images()

    @app.get(f"{API_PREFIX}/images/inspect", tags=["images"], responses=_errors(400, 404))
    def inspect_image(ref: Annotated[str, Query(min_length=1, max_length=512)]) -> Any:
        return node.inspect_image(ref)

    @app.delete(
        f"{API_PREFIX}/images",
        response_model=list[str],
        tags=["images"],
        responses=_errors(400, 404, 409),
    )
    def remove_image(
        ref: Annotated[str, Query(min_length=1, max_length=512)], force: bool = False
    ) -> list[str]:
        return node.remove_image(ref, force=force)

    @app.post(
        f"{API_PREFIX}/images/prune",
        response_model=PruneReport,
        tags=["images"],
        responses=_errors(409),
    )
    def prune_images() -> PruneReport:
        return node.prune_images()

    @app.post(
        f"{API_PREFIX}/images/pull",
        response_class=EventSourceResponse,
        tags=["images"],
        summary="Pull an image; progress as server-sent events",
        responses=_errors(400, 413, events=True),
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

    @app.post(
        f"{API_PREFIX}/images/prewarm", tags=["images"], responses=_errors(400, 404, 409, 413, 502)
    )
    def prewarm(request: RunRequest) -> dict[str, str]:
        return {"snapshot": node.prewarm(request)}

    # -- instances -------------------------------------------------------------------------------

    @app.post(
        f"{API_PREFIX}/instances",
        response_model=Instance,
        status_code=201,
        tags=["instances"],
        responses=_errors(400, 404, 409, 413, 502),
    )
    def create_instance(request: RunRequest) -> Instance:
        return node.run(request)

    @app.get(
        f"{API_PREFIX}/instances",
        response_model=list[Instance],
        tags=["instances"],
        responses=_errors(),
    )
    def list_instances(all: bool = False) -> list[Instance]:
        return node.list(all_instances=all)

    @app.get(
        f"{API_PREFIX}/instances/{{key}}",
        response_model=Instance,
        tags=["instances"],
        responses=_errors(404),
    )
    def get_instance(key: str) -> Instance:
        return node.get(key)

    @app.post(
        f"{API_PREFIX}/instances/{{key}}/start",
        response_model=Instance,
        tags=["instances"],
        responses=_errors(400, 404, 409),
    )
    def start_instance(key: str) -> Instance:
        return node.start(key)

    @app.post(
        f"{API_PREFIX}/instances/{{key}}/stop",
        response_model=Instance,
        tags=["instances"],
        responses=_errors(404, 409),
    )
    def stop_instance(key: str, timeout: Annotated[float, Query(ge=0, le=3600)] = 10.0) -> Instance:
        return node.stop(key, timeout)

    @app.post(
        f"{API_PREFIX}/instances/{{key}}/kill",
        response_model=Instance,
        tags=["instances"],
        responses=_errors(404, 409),
    )
    def kill_instance(key: str) -> Instance:
        return node.kill(key)

    @app.post(
        f"{API_PREFIX}/instances/{{key}}/wait",
        response_model=Instance,
        tags=["instances"],
        responses=_errors(404),
    )
    async def wait_instance(
        request: Request,
        key: str,
        timeout: Annotated[float | None, Query(ge=0, le=86_400)] = None,
    ) -> Instance:
        # Polled on the event loop, a worker thread only for each short look: waits that
        # block a thread each would starve every other route once a few dozen clients wait.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            instance = await anyio.to_thread.run_sync(node.get, key)
            if not instance.state.active:
                return instance
            if deadline is not None and time.monotonic() >= deadline:
                return instance
            if await request.is_disconnected():
                return instance  # nobody reads the answer
            await asyncio.sleep(_WAIT_POLL_S)

    @app.delete(
        f"{API_PREFIX}/instances/{{key}}",
        response_model=Instance,
        tags=["instances"],
        responses=_errors(404, 409),
    )
    def remove_instance(key: str, force: bool = False) -> Instance:
        return node.remove(key, force=force)

    @app.get(
        f"{API_PREFIX}/instances/{{key}}/stats",
        response_model=InstanceStats,
        tags=["instances"],
        responses=_errors(404, 409),
    )
    def instance_stats(key: str) -> InstanceStats:
        return node.stats(key)

    @app.get(
        f"{API_PREFIX}/instances/{{key}}/logs",
        response_class=StreamingResponse,
        tags=["instances"],
        summary="Console or results bytes from an offset; with follow, until the instance ends",
        responses=_errors(404),
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

    @app.get(
        f"{API_PREFIX}/events",
        response_class=EventSourceResponse,
        tags=["instances"],
        summary="Instance state changes as server-sent events",
        responses=_errors(events=True),
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

    return app


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
