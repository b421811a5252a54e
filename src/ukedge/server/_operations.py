"""``/healthz`` and ``/metrics``, the two routes every ukedge server answers the same way.

``/healthz`` is liveness and readiness for supervisors and load balancers: 200 with
``{"status": "ok", "version": …}`` plus whatever the server adds (the hub: whether auth is on).
``/metrics`` is the app's own Prometheus registry in the text format; ``before_scrape`` lets a
server refresh a gauge that is cheaper to read than to keep current.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from ukedge import __version__

__all__ = ["Health", "add_operations"]


class Health(BaseModel):
    """The ``/healthz`` answer; servers may add fields."""

    model_config = ConfigDict(extra="allow")

    status: str
    version: str


def add_operations(
    app: FastAPI,
    registry: CollectorRegistry,
    *,
    health: Callable[[], dict[str, Any]] | None = None,
    before_scrape: Callable[[], None] | None = None,
) -> None:
    """Add ``GET /healthz`` and ``GET /metrics`` to ``app`` (tagged ``operations``)."""

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """Liveness and readiness: the server answers, and its version."""
        return {"status": "ok", "version": __version__, **(health() if health else {})}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics in the text format."""
        if before_scrape is not None:
            before_scrape()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
