"""The controller's REST API (FastAPI), built by :func:`create_controller_app`.

One router per audience: ``_routes_link`` for the nodes (enrolment with a join token, heartbeat
and results with the node's own credential), ``_routes_fleet`` (join tokens and nodes),
``_routes_deployments`` (deployments, revisions, replicas) and ``_routes_results`` (queries and
the live stream) for the operator's admin token; ``_routes_ui`` serves the dashboard page at
``/`` (open: it holds no data and asks for the token). Every error is JSON ``{"detail": "…"}`` whose
text names the field, node or deployment at fault. Blocking work (the database, the registry
when a revision pins its image) runs in the thread pool: the routes are plain functions, except
the heartbeat, which awaits its group commit (see ``_heartbeats``).

The app's lifespan runs the reconcile loop (see ``_loop``); ``run_loop=False`` serves the API
only (tests that drive passes themselves).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ukedge import __version__
from ukedge.controller._auth import admin_guard
from ukedge.controller._controller import Controller
from ukedge.controller._metrics import FleetMetrics
from ukedge.controller._routes_deployments import deployments_router
from ukedge.controller._routes_fleet import fleet_router
from ukedge.controller._routes_link import link_router
from ukedge.controller._routes_results import results_router
from ukedge.controller._routes_ui import ui_router
from ukedge.errors import ControllerError, RegistryError, UkedgeError, UsageError
from ukedge.server import BodyLimit, HttpMetrics, MetricsMiddleware, add_operations
from ukedge.validation import validation_message

__all__ = ["MAX_BODY_BYTES", "create_controller_app"]

#: The largest request body read: a full batch of results (10,000 records) of modest lines, or
#: a heartbeat of a node running thousands of instances, fits; more is refused unread (413).
MAX_BODY_BYTES = 32 << 20

_access_log = logging.getLogger("ukedge.controller.access")


def _status(exc: UkedgeError) -> int:
    if isinstance(exc, ControllerError):
        return exc.status or 500
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, RegistryError):
        return 502
    return 500


def create_controller_app(controller: Controller, *, run_loop: bool = True) -> FastAPI:
    """The API over ``controller``; its lifespan runs the reconcile loop unless told not to."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = controller.make_loop() if run_loop else None
        bridge = controller.bridge if loop is not None else None
        if loop is not None:
            loop.start()
        if loop is not None and bridge is not None:
            bridge.start(lambda: loop.leadership.leading)
        try:
            yield
        finally:
            if bridge is not None:
                await bridge.stop()
            if loop is not None:
                await loop.stop()

    app = FastAPI(
        title="ukedge controller",
        version=__version__,
        description="The cloud centre: enrols edge nodes, deploys and schedules unikernel "
        "replicas across them, and collects their results.",
        lifespan=lifespan,
    )
    # Inside the metrics middleware (added after it), so refused bodies are counted too.
    app.add_middleware(
        BodyLimit,
        limit=MAX_BODY_BYTES,
        error=lambda message: json.dumps({"detail": message}).encode(),
    )
    registry = CollectorRegistry()
    app.add_middleware(
        MetricsMiddleware,
        metrics=HttpMetrics("ukedge_controller", registry),
        access_log=_access_log if controller.settings.access_log else None,
    )
    fleet = FleetMetrics(controller, registry)
    add_operations(
        app,
        registry,
        health=lambda: {
            "leader": controller.loop is not None and controller.loop.leadership.leading
        },
        before_scrape=fleet.refresh,
    )

    @app.exception_handler(UkedgeError)
    async def _ukedge_error(_request: Request, exc: UkedgeError) -> JSONResponse:
        status = _status(exc)
        headers = (
            {"WWW-Authenticate": 'Bearer realm="ukedge-controller"'} if status == 401 else None
        )
        return JSONResponse({"detail": str(exc)}, status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(DataError)
    async def _unstorable(_request: Request, exc: DataError) -> JSONResponse:
        # What the schema lets through but the database refuses (PostgreSQL: a NUL character
        # in a text, a number beyond the column): the request's fault, nothing was stored.
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return JSONResponse({"detail": f"invalid request: a value cannot be stored: {cause}"}, 422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_message(exc, whole="body")
        return JSONResponse({"detail": f"invalid request: {problems}"}, 422)

    admin = admin_guard(controller.identity.admin_token)
    app.include_router(link_router(controller))
    for router in (fleet_router, deployments_router, results_router):
        app.include_router(router(controller, admin))
    app.include_router(ui_router())
    return app
