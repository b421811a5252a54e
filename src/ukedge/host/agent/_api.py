"""The host agent's REST API: one node's instances and images over HTTP (FastAPI).

One router per resource (``_routes_node``, ``_routes_images``, ``_routes_instances``,
``_routes_streams`` for logs and events), each thin over :class:`~ukedge.host.LocalNode`, so the
API does exactly what the local CLI does. Blocking work (QMP, SQLite, registry transfers) runs in
the thread pool; streams (logs, pull progress, events) are async generators that poll a thread
for the next piece, so a client that goes away frees its thread within a second.

Errors keep their ukedge class across the wire (``{"error": {"kind", "message"}}``, see
``_errors``), so the remote CLI raises the same error, with the same message and exit code, as
the local one.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ukedge import __version__
from ukedge.errors import UkedgeError
from ukedge.host._node import LocalNode
from ukedge.host.agent._errors import error_body, error_status
from ukedge.host.agent._metrics import AgentMetrics
from ukedge.host.agent._routes_images import images_router
from ukedge.host.agent._routes_instances import instances_router
from ukedge.host.agent._routes_node import node_router
from ukedge.host.agent._routes_streams import streams_router
from ukedge.server import MetricsMiddleware, add_operations
from ukedge.validation import validation_message

__all__ = ["API_PREFIX", "create_agent_app"]

API_PREFIX = "/v1"
_access_log = logging.getLogger("ukedge.host.access")


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
        return JSONResponse(error_body(type(exc).__name__, str(exc)), error_status(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body that is not JSON, an unknown route or method) in the
        # one error shape, so a client reads every error the same way.
        kind = "UsageError" if exc.status_code < 500 else "AgentError"
        return JSONResponse(error_body(kind, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_message(exc, whole="body")
        return JSONResponse(error_body("UsageError", f"invalid request: {problems}"), 422)

    # The prefix goes into each router, not into include_router: the metrics label a request
    # by its route's own template, which must be the whole path (``/v1/instances/{key}``).
    for router in (node_router, images_router, instances_router, streams_router):
        app.include_router(router(node, API_PREFIX))
    return app
