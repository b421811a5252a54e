"""Deployments, their revisions and replicas (admin token)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ukedge.controller._controller import Controller
from ukedge.controller._deployments import (
    apply_spec,
    delete_deployment,
    get_deployment,
    list_deployments,
    list_replicas,
    list_revisions,
    rollback,
    scale,
)
from ukedge.controller._models import Deployment, DeploymentSpec, ReplicaRecord, Revision
from ukedge.controller._signatures import check_signed

__all__ = ["RollbackRequest", "ScaleRequest", "deployments_router"]


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=100_000, strict=True)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The revision to return to (default: the one before the current).
    revision: int | None = Field(default=None, ge=1, strict=True)


_NO_BODY = Body(default=None)


def deployments_router(controller: Controller, admin: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(dependencies=[Depends(admin)], tags=["deployments"])
    db = controller.db

    @router.post("/v1/deployments", response_model=Deployment)
    def deploy(spec: DeploymentSpec) -> Deployment:
        """Create the deployment, or roll out a new revision when its spec changed (the image
        is pinned to a digest now; a spec that differs only in replicas scales)."""
        pinned = controller.pinner(spec.image, spec.placement.architectures)
        if spec.require_signature:
            check_signed(pinned.reference, controller.trusted_keys)
        return apply_spec(db, spec, pinned, now=controller.now())

    @router.get("/v1/deployments", response_model=list[Deployment])
    def deployments() -> list[Deployment]:
        return list_deployments(db)

    @router.get("/v1/deployments/{name}", response_model=Deployment)
    def deployment(name: str) -> Deployment:
        return get_deployment(db, name)

    @router.delete("/v1/deployments/{name}", status_code=204)
    def remove(name: str) -> Response:
        """Delete it; its nodes stop its replicas at their next heartbeat."""
        delete_deployment(db, name)
        return Response(status_code=204)

    @router.post("/v1/deployments/{name}/scale", response_model=Deployment)
    def scale_to(name: str, body: ScaleRequest) -> Deployment:
        return scale(db, name, body.replicas, now=controller.now())

    @router.get("/v1/deployments/{name}/revisions", response_model=list[Revision])
    def revisions(name: str) -> list[Revision]:
        return list_revisions(db, name)

    @router.post("/v1/deployments/{name}/rollback", response_model=Deployment)
    def undo(name: str, body: RollbackRequest | None = _NO_BODY) -> Deployment:
        """Return to an earlier revision (default: the previous one)."""
        target = body.revision if body is not None else None
        return rollback(db, name, target, now=controller.now())

    @router.get("/v1/replicas", response_model=list[ReplicaRecord])
    def replicas(deployment: str | None = None, node: str | None = None) -> list[ReplicaRecord]:
        """Replicas, of one deployment and/or on one node (id or name)."""
        return list_replicas(db, deployment=deployment or None, node=node or None)

    return router
