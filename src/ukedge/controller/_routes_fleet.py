"""The operator's side of the fleet: join tokens, nodes and moves of replicas (admin token)."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ukedge.controller._controller import Controller
from ukedge.controller._heartbeat import instance_name
from ukedge.controller._models import MoveRecord, MoveRequest, NodeRecord, TokenCreated, TokenInfo
from ukedge.controller._moveapi import cancel_move, find_move, list_moves, start_api_move
from ukedge.controller._nodes import (
    delete_node,
    find_node,
    list_nodes,
    node_record,
    set_flags,
    set_labels,
)
from ukedge.controller._tokens import create_token, delete_token, list_tokens
from ukedge.errors import ControllerError
from ukedge.host.link import MoveMode

__all__ = ["LabelChange", "TokenRequest", "fleet_router"]

_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=512)
    #: Seconds the token may be used for (None: no expiry).
    ttl_s: float | None = Field(default=None, gt=0, le=366 * 86_400)
    #: Nodes it may enrol (None: any number).
    uses: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)


class LabelChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set: dict[str, str] = Field(default_factory=dict, max_length=64)
    remove: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("set")
    @classmethod
    def _set(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(
                    f"invalid label name {key!r}: letters, digits, '.', '_', '/', '-', 1-63"
                )
            if len(value) > 253 or not value.isprintable():
                raise ValueError(f"label {key}: value too long or not printable")
        return labels


def fleet_router(controller: Controller, admin: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(dependencies=[Depends(admin)])
    db = controller.db

    @router.post("/v1/tokens", response_model=TokenCreated, status_code=201, tags=["tokens"])
    def create(body: TokenRequest) -> TokenCreated:
        """A join token (shown once: only a hash of its secret is kept)."""
        return create_token(
            db,
            fingerprint=controller.identity.fingerprint,
            description=body.description,
            ttl_s=body.ttl_s,
            uses=body.uses,
            now=controller.now(),
        )

    @router.get("/v1/tokens", response_model=list[TokenInfo], tags=["tokens"])
    def tokens() -> list[TokenInfo]:
        return list_tokens(db)

    @router.delete("/v1/tokens/{token_id}", status_code=204, tags=["tokens"])
    def revoke(token_id: str) -> Response:
        delete_token(db, token_id)
        return Response(status_code=204)

    @router.get("/v1/nodes", response_model=list[NodeRecord], tags=["nodes"])
    def nodes() -> list[NodeRecord]:
        return list_nodes(db)

    @router.get("/v1/nodes/{key}", response_model=NodeRecord, tags=["nodes"])
    def node(key: str) -> NodeRecord:
        """A node by id or name."""
        with db.read() as connection:
            return node_record(find_node(connection, key))

    @router.put("/v1/nodes/{key}/labels", response_model=NodeRecord, tags=["nodes"])
    def labels(key: str, body: LabelChange) -> NodeRecord:
        """Set and remove labels (kept over what the node itself reports)."""
        return set_labels(db, key, body.set, body.remove)

    @router.post("/v1/nodes/{key}/cordon", response_model=NodeRecord, tags=["nodes"])
    def cordon(key: str) -> NodeRecord:
        """Take no new replicas on the node; those it runs stay."""
        return set_flags(db, key, cordoned=True)

    @router.post("/v1/nodes/{key}/uncordon", response_model=NodeRecord, tags=["nodes"])
    def uncordon(key: str) -> NodeRecord:
        """Take new replicas again; ends a drain (moves under way finish)."""
        return set_flags(
            db, key, cordoned=False, draining=False, drain_migrate=None, drain_postcopy=False
        )

    @router.post("/v1/nodes/{key}/drain", response_model=NodeRecord, tags=["nodes"])
    def drain(key: str, migrate: MoveMode | None = None, postcopy: bool = False) -> NodeRecord:
        """Empty the node: each replica is replaced elsewhere (make-before-break) or, with
        ``migrate=snapshot|live``, moved with its memory to a node that takes part in moves
        (2 tries per replica in this drain, then replaced); ``postcopy`` (with
        ``migrate=live``): each move switches to post-copy after QEMU's first pass."""
        if postcopy and migrate != "live":
            raise ControllerError(
                f"postcopy is for migrate=live, not {migrate or 'a drain without migrate'}",
                status=422,
            )
        return set_flags(
            db,
            key,
            draining=True,
            drain_migrate=migrate,
            drain_postcopy=postcopy,
            drained_at=controller.now(),
        )

    @router.post("/v1/moves", response_model=MoveRecord, status_code=201, tags=["moves"])
    def move(body: MoveRequest) -> MoveRecord:
        """Move one running replica to another node with its memory (both nodes must take
        part in moves); follow it with ``GET /v1/moves/{id}``. A failed move leaves the
        replica where it was, running."""
        return start_api_move(db, body, instance_name=instance_name, now=controller.now())

    @router.get("/v1/moves", response_model=list[MoveRecord], tags=["moves"])
    def moves(active: bool = False) -> list[MoveRecord]:
        """The moves tried, newest first (``active``: only those not ended)."""
        return list_moves(db, active=active)

    @router.get("/v1/moves/{move_id}", response_model=MoveRecord, tags=["moves"])
    def get_move(move_id: str) -> MoveRecord:
        return find_move(db, move_id)

    @router.delete("/v1/moves/{move_id}", response_model=MoveRecord, tags=["moves"])
    def cancel(move_id: str) -> MoveRecord:
        """Cancel a move: waiting for its offer, it fails at once; moving, the replica's node
        cancels it at its next heartbeat and resumes the instance where it was (the move then
        ends ``failed``). 409 once it has ended (``done``: the replica runs on the target)."""
        return cancel_move(db, move_id, now=controller.now())

    @router.delete("/v1/nodes/{key}", status_code=204, tags=["nodes"])
    def remove(key: str) -> Response:
        """Forget a node: its credential stops working, its replicas are placed elsewhere."""
        delete_node(db, key)
        return Response(status_code=204)

    return router
