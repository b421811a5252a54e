"""``/v1/instances``: create, read, start, stop, kill, wait, remove, stats.

Routes are thin over :class:`~ukedge.host.LocalNode`, so the API does what the local CLI does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request

from ukedge.host._models import Instance, InstanceStats, RunRequest
from ukedge.host._node import LocalNode
from ukedge.host.agent._errors import responses

__all__ = ["instances_router"]

_WAIT_POLL_S = 0.2


def instances_router(node: LocalNode, prefix: str) -> APIRouter:
    """The routes under ``prefix`` (the API version's, ``/v1``)."""
    router = APIRouter(prefix=f"{prefix}/instances", tags=["instances"])

    @router.post(
        "",
        response_model=Instance,
        status_code=201,
        responses=responses(400, 404, 409, 413, 502),
    )
    def create_instance(request: RunRequest) -> Instance:
        return node.run(request)

    @router.get("", response_model=list[Instance], responses=responses())
    def list_instances(all: bool = False) -> list[Instance]:
        return node.list(all_instances=all)

    @router.get("/{key}", response_model=Instance, responses=responses(404))
    def get_instance(key: str) -> Instance:
        return node.get(key)

    @router.post("/{key}/start", response_model=Instance, responses=responses(400, 404, 409))
    def start_instance(key: str) -> Instance:
        return node.start(key)

    @router.post("/{key}/stop", response_model=Instance, responses=responses(404, 409))
    def stop_instance(key: str, timeout: Annotated[float, Query(ge=0, le=3600)] = 10.0) -> Instance:
        return node.stop(key, timeout)

    @router.post("/{key}/kill", response_model=Instance, responses=responses(404, 409))
    def kill_instance(key: str) -> Instance:
        return node.kill(key)

    @router.post("/{key}/wait", response_model=Instance, responses=responses(404))
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

    @router.delete("/{key}", response_model=Instance, responses=responses(404, 409))
    def remove_instance(key: str, force: bool = False) -> Instance:
        return node.remove(key, force=force)

    @router.get("/{key}/stats", response_model=InstanceStats, responses=responses(404, 409))
    def instance_stats(key: str) -> InstanceStats:
        return node.stats(key)

    return router
