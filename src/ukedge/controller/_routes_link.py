"""The nodes' side of the API: enrol (join token), heartbeat and results (node credential)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from ukedge.controller._auth import bearer
from ukedge.controller._controller import Controller
from ukedge.controller._nodes import authenticate_node, enrol
from ukedge.controller._results import store_batch
from ukedge.errors import ControllerError
from ukedge.host.link import (
    ENROL_PATH,
    HEARTBEAT_PATH,
    RESULTS_PATH,
    EnrolReply,
    EnrolRequest,
    Heartbeat,
    HeartbeatReply,
    ResultBatch,
)

__all__ = ["link_router"]

#: The largest integer a database column holds (BIGINT, SQLite INTEGER).
_MAX_INT = (1 << 63) - 1


def _fits(value: object) -> bool:
    """Whether every integer in ``value`` fits a column (no path built: most requests do)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is int:
            if not -_MAX_INT <= item <= _MAX_INT:
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _in_range(value: object, where: str = "") -> None:
    """Refuse (422, naming the field) integers no column can hold: the wire models bound
    what they must, not every count (a node could report any number)."""
    if not where and _fits(value):
        return
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -_MAX_INT <= value <= _MAX_INT:
        raise ControllerError(
            f"invalid request: {where or 'body'}: number out of range", status=422
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _in_range(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _in_range(item, f"{where}[{index}]")


def link_router(controller: Controller) -> APIRouter:
    router = APIRouter(tags=["nodes (agent side)"])
    settings = controller.settings

    @router.post(ENROL_PATH, response_model=EnrolReply)
    def enrol_node(request: EnrolRequest) -> EnrolReply:
        """Enrol a node with a join token's ``id.secret``: the node gets its id and credential."""
        return enrol(
            controller.db,
            request,
            now=controller.now(),
            interval=settings.heartbeat_interval_s,
        )

    @router.post(HEARTBEAT_PATH, response_model=HeartbeatReply)
    async def heartbeat(node_id: str, beat: Heartbeat, request: Request) -> Response:
        """The node's report; the answer carries its desired state when it has not applied it."""
        # Async, unlike the other routes: the event loop queues the heartbeat for the group
        # commit (``_heartbeats``) and waits, so no worker thread is held per heartbeat; the
        # reply is already a wire model and goes out as it is.
        _in_range(beat.model_dump())
        reply = await controller.heartbeats.submit(node_id, bearer(request), beat)
        return Response(reply.model_dump_json(), media_type="application/json")

    @router.post(RESULTS_PATH)
    def results(node_id: str, batch: ResultBatch, request: Request) -> dict[str, Any]:
        """Store a batch of one instance's results (idempotent by node, instance and seq)."""
        _in_range(batch.model_dump())
        with controller.db.read() as connection:
            authenticate_node(connection, node_id, bearer(request))
        stored = store_batch(controller.db, node_id, batch, now=controller.now())
        controller.notifier.notify()
        return {"stored_through": stored}

    return router
