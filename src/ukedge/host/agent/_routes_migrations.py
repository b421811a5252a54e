"""``/v1/migrations``: offers (target side), moves out (source side), their status, cancel.

Behind the agent's bearer token like every route: an offer hands out a ticket, so only a client
holding the target's token (an operator's CLI, a controller) can admit a move.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query

from ukedge.host.agent._errors import responses
from ukedge.host.migration import MigrateRequest, MigrationOffer, Migrations, MigrationStatus

__all__ = ["migrations_router"]


def migrations_router(migrations: Migrations, prefix: str) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["migrations"])

    @router.post("/migrations/offer", response_model=MigrationOffer, responses=responses())
    def offer() -> MigrationOffer:
        return migrations.offer()

    @router.post(
        "/instances/{key}/migrate",
        response_model=MigrationStatus,
        status_code=202,
        responses=responses(400, 404, 409),
    )
    def migrate(key: str, request: MigrateRequest) -> MigrationStatus:
        return migrations.start(key, request)

    @router.get("/migrations", response_model=list[MigrationStatus], responses=responses())
    def list_migrations() -> list[MigrationStatus]:
        return migrations.list()

    @router.get("/migrations/{migration}", response_model=MigrationStatus, responses=responses(409))
    async def get_migration(
        migration: str, wait: Annotated[float, Query(ge=0, le=60)] = 0
    ) -> MigrationStatus:
        """With ``wait``, answers once the move has ended or ``wait`` seconds passed."""
        if wait:
            return await anyio.to_thread.run_sync(migrations.wait, migration, wait)
        return migrations.get(migration)

    @router.delete(
        "/migrations/{migration}", response_model=MigrationStatus, responses=responses(409)
    )
    def cancel_migration(migration: str) -> MigrationStatus:
        return migrations.cancel(migration)

    return router
