"""``/v1/node``: what the node is and what it holds."""

from __future__ import annotations

from fastapi import APIRouter

from ukedge.host._models import NodeInfo
from ukedge.host._node import LocalNode
from ukedge.host.agent._errors import responses

__all__ = ["node_router"]


def node_router(node: LocalNode, prefix: str) -> APIRouter:
    """The routes under ``prefix`` (the API version's, ``/v1``)."""
    router = APIRouter(prefix=prefix, tags=["node"])

    @router.get("/node", response_model=NodeInfo, responses=responses())
    def node_info() -> NodeInfo:
        return node.info()

    return router
