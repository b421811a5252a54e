"""The hub as an ASGI app: :func:`create_app` wires settings, storage, metadata, auth and routes.

The ``/v2/`` distribution API is one raw route, described in the OpenAPI document by
:mod:`ukedge.hub._openapi`; the hub's own endpoints (``/token``, ``/healthz``,
``/api/repositories``) are FastAPI routes with response models, so ``/openapi.json`` and
``/docs`` describe them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.routing import Route

from ukedge import __version__, paths
from ukedge.errors import UkedgeError
from ukedge.hub import storage as storage_pkg
from ukedge.hub._auth import Authority, Principal
from ukedge.hub._blobs import BlobService
from ukedge.hub._db import Database
from ukedge.hub._errors import Code, DistributionError, error_handler, internal_error_handler
from ukedge.hub._gc import GcReport, collect
from ukedge.hub._manifests import ManifestService
from ukedge.hub._metrics import HubMetrics, route_template
from ukedge.hub._openapi import describe_v2
from ukedge.hub._overview import Overview
from ukedge.hub._settings import HubSettings
from ukedge.hub._v2 import V2_METHODS, V2Api, V2Shortcut
from ukedge.hub._web import render_index
from ukedge.server import MetricsMiddleware, add_operations

__all__ = ["Hub", "create_app"]

log = logging.getLogger(__name__)
_access_log = logging.getLogger("ukedge.hub.access")


class Hub:
    """One hub's services over one data directory; also used without HTTP by the CLI."""

    def __init__(self, settings: HubSettings, metrics: HubMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or HubMetrics()
        paths.private_dir(settings.data_dir)
        paths.private_file(settings.db_path)  # password hashes: ours alone, -wal/-shm alike
        for journal in settings.data_dir.glob(f"{settings.db_path.name}-*"):
            journal.chmod(0o600)
        self.db = Database(settings.db_path)
        self.storage = storage_pkg.create(
            settings.storage_driver, settings.driver_config(), self.metrics.observe_storage
        )
        self.blobs = BlobService(self.db, self.storage)
        self.manifests = ManifestService(self.db)
        self.overview = Overview(self.db)
        self.auth = Authority(
            self.db,
            settings.key_path,
            service=settings.service,
            mode=settings.auth,
            anonymous_pull=tuple(settings.anonymous_pull),
            ttl=settings.token_ttl,
        )
        self._gc_lock = asyncio.Lock()

    async def gc(self, *, dry_run: bool = False) -> GcReport:
        """One online GC pass; passes within this process never overlap."""
        async with self._gc_lock:
            report = await collect(
                self.db,
                self.storage,
                grace=self.settings.gc_grace,
                upload_ttl=self.settings.upload_ttl,
                dry_run=dry_run,
                active_uploads=self.blobs.active_uploads,
            )
        if not dry_run:
            self.blobs.forget(report.uploads)
        self.metrics.gc_runs.inc()
        self.metrics.gc_swept.inc(len(report.blobs))
        return report

    def close(self) -> None:
        self.db.dispose()


class TokenResponse(BaseModel):
    """Docker token-auth answer; ``access_token`` repeats ``token`` for OAuth2 clients."""

    token: str
    access_token: str
    expires_in: int
    issued_at: str


class TagSummary(BaseModel):
    tag: str
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    pushed_at: float
    signed: bool
    #: The platforms of a multi-platform image (an index); empty for a single manifest.
    platforms: list[str] = []


class RepositorySummary(BaseModel):
    name: str
    manifests: int
    last_push: float
    tags: list[TagSummary]


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise DistributionError(Code.UNAUTHORIZED, "malformed Basic credentials") from exc
    return user, password


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def create_app(settings: HubSettings, hub: Hub | None = None) -> FastAPI:
    """The hub's ASGI app: ``hub serve`` runs it under uvicorn, tests and ``up`` in-process."""
    hub = hub or Hub(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _ = hub.auth.key  # made (0600) on first start, not on the first login
        task = None
        if settings.gc_interval > 0:
            task = asyncio.create_task(_gc_loop(hub, settings.gc_interval))
        log.info("hub ready", extra={"data_dir": str(settings.data_dir), "auth": settings.auth})
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            hub.close()

    app = FastAPI(
        title="ukedge hub",
        version=__version__,
        description=(
            "OCI distribution registry for unikernel images. The `/v2/` API follows the OCI "
            "Distribution Specification v1.1 (tag `distribution`); the other endpoints are "
            "the hub's own."
        ),
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.add_exception_handler(UkedgeError, error_handler)
    app.add_exception_handler(Exception, internal_error_handler)
    v2 = V2Api(hub)
    # First in the route list: every pull and push request goes here.
    app.router.routes[0:0] = [
        Route("/v2/{path:path}", v2.handle, methods=V2_METHODS, include_in_schema=False),
        Route("/v2", v2.handle, methods=V2_METHODS, include_in_schema=False),
    ]

    def principal_for(request: Request) -> Principal:
        creds = _basic(request)
        if creds is None:
            return hub.auth.anonymous()
        return hub.auth.authenticate(*creds, client=_client(request))

    @app.get("/token", response_model=TokenResponse, tags=["auth"])
    def token(
        request: Request,
        service: str | None = None,
        scope: Annotated[list[str] | None, Query()] = None,
        account: str | None = None,
    ) -> dict[str, Any]:
        """Docker token endpoint: HTTP Basic (password or robot token) in, a bearer token out.

        The token grants the requested scopes (``repository:NAME:pull,push``) that the caller's
        grants allow; without credentials, only anonymous pull of the configured namespaces.
        """
        if service is not None and service != hub.auth.service:
            raise DistributionError(
                Code.DENIED, f"this hub is service {hub.auth.service!r}, not {service!r}"
            )
        return hub.auth.issue(principal_for(request), scope or []).as_json()

    @app.post("/token", response_model=TokenResponse, tags=["auth"])
    async def token_oauth(request: Request) -> dict[str, Any]:
        """OAuth2 password grant (``grant_type=password``), as containerd clients send it."""
        form = await request.form()
        if form.get("grant_type") != "password":
            raise DistributionError(Code.UNSUPPORTED, "only grant_type=password is supported")
        principal = hub.auth.authenticate(
            str(form.get("username")), str(form.get("password")), client=_client(request)
        )
        scopes = [str(s) for s in form.getlist("scope")]
        return hub.auth.issue(principal, scopes).as_json()

    add_operations(
        app,
        hub.metrics.registry,
        health=lambda: {"auth": hub.auth.enabled},
        before_scrape=lambda: hub.metrics.uploads.set(hub.blobs.uploads_in_progress),
    )

    def visible(request: Request) -> list[dict[str, Any]]:
        repos = hub.overview.repositories()
        if not hub.auth.enabled:
            return repos
        principal = principal_for(request)
        return [
            r
            for r in repos
            if any(g.allows("repository", r["name"], "pull") for g in principal.grants)
        ]

    @app.get("/api/repositories", response_model=list[RepositorySummary], tags=["browse"])
    def repositories(request: Request) -> list[dict[str, Any]]:
        """Repositories the caller may pull, with tags, sizes, push times and signatures."""
        return visible(request)

    @app.post("/api/gc", response_model=dict[str, Any], tags=["operations"])
    async def gc(request: Request, dry_run: bool = False) -> dict[str, Any]:
        """Run one online GC pass now (needs ``registry:gc:*`` when auth is on)."""
        hub.auth.check(
            request.headers.get("authorization"),
            "registry",
            "gc",
            ("*",),
            settings.realm or f"{str(request.base_url).rstrip('/')}/token",
        )
        return (await hub.gc(dry_run=dry_run)).as_json()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        return HTMLResponse(render_index(visible(request), request.url.netloc))

    describe_v2(app)
    app.add_middleware(V2Shortcut, api=v2)
    app.add_middleware(
        MetricsMiddleware,
        metrics=hub.metrics.http,
        route=lambda scope: route_template(scope["path"]),
        access_log=_access_log if settings.access_log else None,
    )
    return app


async def _gc_loop(hub: Hub, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        started = time.monotonic()
        try:
            report = await hub.gc()
            log.info(
                "scheduled gc",
                extra={"swept": len(report.blobs), "seconds": time.monotonic() - started},
            )
        except UkedgeError as exc:
            log.error("scheduled gc failed: %s", exc)
