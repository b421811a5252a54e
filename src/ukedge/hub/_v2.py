"""The ``/v2/`` API of the OCI distribution spec v1.1, as one dispatcher over the services.

Repository names contain ``/``, so the path is matched here with the spec's own patterns (the
last ``/blobs/``, ``/manifests/``… wins) instead of by the router. Every handler checks access
first, then calls one service method; errors propagate as :class:`DistributionError` to the one
handler in :mod:`ukedge.hub._errors`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ukedge.errors import UkedgeError
from ukedge.hub._errors import Code, DistributionError, internal_error_response, to_response
from ukedge.hub._manifest_parse import read_limited
from ukedge.hub._names import check_digest, check_name
from ukedge.hub._v2_request import (
    API_VERSION,
    byte_range,
    content_range,
    idle_bounded,
    int_header,
    page,
    paged,
)
from ukedge.image import mediatypes

if TYPE_CHECKING:
    from ukedge.hub._auth import Authority
    from ukedge.hub._blobs import BlobService
    from ukedge.hub._manifests import ManifestService
    from ukedge.hub._metrics import HubMetrics
    from ukedge.hub._settings import HubSettings

__all__ = ["V2_METHODS", "V2Api", "V2Shortcut"]

log = logging.getLogger(__name__)

V2_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_PATTERNS = [
    ("upload", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")),
    ("blob", re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$")),
    ("manifest", re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")),
    ("tags", re.compile(r"^/v2/(?P<name>.+)/tags/list$")),
    ("referrers", re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$")),
]
_SMALL_BLOB = 256 * 1024


class HubParts(Protocol):
    """The parts of a :class:`~ukedge.hub._app.Hub` the API uses (named here, not imported from
    ``_app``, which imports this module: the two would be one module in two files)."""

    @property
    def settings(self) -> HubSettings: ...
    @property
    def metrics(self) -> HubMetrics: ...
    @property
    def auth(self) -> Authority: ...
    @property
    def blobs(self) -> BlobService: ...
    @property
    def manifests(self) -> ManifestService: ...


class V2Api:
    """Routes ``/v2/…`` requests to handlers; owned by one :class:`~ukedge.hub._app.Hub`."""

    def __init__(self, hub: HubParts) -> None:
        self.hub = hub
        self.blobs = hub.blobs
        self.manifests = hub.manifests

    def _body(self, request: Request) -> AsyncIterator[bytes]:
        return idle_bounded(request.stream(), self.hub.settings.body_timeout)

    def _realm(self, request: Request) -> str:
        return self.hub.settings.realm or f"{str(request.base_url).rstrip('/')}/token"

    def _allow(self, request: Request, name: str, *actions: str, type_: str = "repository") -> None:
        if not self.hub.auth.enabled:
            return
        self.hub.auth.check(
            request.headers.get("authorization"), type_, name, actions, self._realm(request)
        )

    async def handle(self, request: Request) -> Response:
        try:
            response = await self._dispatch(request)
        except UkedgeError as exc:
            response = to_response(exc, head=request.method == "HEAD")
        except ClientDisconnect:
            # The client went away mid-body: the partial chunk is dropped, the upload resumes
            # from its previous offset (GET the session for it).
            log.info("client disconnected during %s %s", request.method, request.scope["path"])
            return Response(None, 400)
        except Exception as exc:  # a bug: still the spec's JSON error, never a bare 500
            response = internal_error_response(exc, request)
        response.headers.update(API_VERSION)
        return response

    async def _dispatch(self, request: Request) -> Response:
        path: str = request.scope["path"]
        method = request.method
        if path in ("/v2", "/v2/"):
            self._allow(request, "")
            return Response(b"{}", 200, media_type="application/json")
        if path == "/v2/_catalog":
            self._allow(request, "catalog", "*", type_="registry")
            if method != "GET":
                raise DistributionError(Code.UNSUPPORTED, f"{method} not allowed here")
            n, last = page(request)
            names = self.manifests.catalog(None if n is None else n + 1, last)
            return paged(request, names, n, "repositories", {})
        for kind, pattern in _PATTERNS:
            match = pattern.match(path)
            if match is None:
                continue
            name = match["name"]
            check_name(name)
            handler = self._handlers.get((kind, method))
            if handler is None:
                raise DistributionError(
                    Code.UNSUPPORTED, f"{method} is not supported on {kind} endpoints"
                )
            return await handler(self, request, name, match)
        raise DistributionError(Code.NAME_UNKNOWN, f"no distribution endpoint at {path}")

    # -- blobs --------------------------------------------------------------------------------

    async def blob_get(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull")
        digest = check_digest(match["digest"])
        info = self.blobs.stat(name, digest)
        headers = {
            "Docker-Content-Digest": digest,
            "Accept-Ranges": "bytes",
            "ETag": f'"{digest}"',
            "Cache-Control": "max-age=31536000",
        }
        start, end, status = 0, info.size - 1, 200
        wanted = byte_range(request, info.size)
        if wanted is not None:
            (start, end), status = wanted, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        length = end - start + 1 if info.size else 0
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(None, status, headers=headers, media_type="application/octet-stream")
        chunks = await self.blobs.open(digest, start, length)
        if length <= _SMALL_BLOB:
            # One buffer is cheaper than a streaming response for configs and small layers.
            body = b"".join([chunk async for chunk in chunks])
            return Response(body, status, headers=headers, media_type="application/octet-stream")
        return StreamingResponse(
            chunks, status, headers=headers, media_type="application/octet-stream"
        )

    async def blob_delete(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "delete")
        self.blobs.unlink(name, match["digest"])
        return Response(None, 202, headers={"Content-Length": "0"})

    # -- uploads ------------------------------------------------------------------------------

    def _upload_response(self, status: int, name: str, upload_id: str, offset: int) -> Response:
        return Response(
            None,
            status,
            headers={
                "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
                "Range": f"0-{max(offset - 1, 0)}",
                "Docker-Upload-UUID": upload_id,
                "Content-Length": "0",
            },
        )

    @staticmethod
    def _created(name: str, digest: str) -> Response:
        return Response(
            None,
            201,
            headers={
                "Location": f"/v2/{name}/blobs/{digest}",
                "Docker-Content-Digest": digest,
                "Content-Length": "0",
            },
        )

    async def upload_start(self, request: Request, name: str, match: re.Match[str]) -> Response:
        if match["id"]:
            raise DistributionError(Code.UNSUPPORTED, "POST goes to /blobs/uploads/ only")
        self._allow(request, name, "pull", "push")
        params = request.query_params
        mount, source = params.get("mount"), params.get("from")
        if mount is not None:
            check_digest(mount)
            if (
                source
                and self._may_pull(request, check_name(source))
                and self.blobs.mount(name, mount, source)
            ):
                return self._created(name, mount)
        digest = params.get("digest")
        if digest is not None:
            length = int_header(request, "content-length")
            info = await self.blobs.put_monolithic(name, digest, self._body(request), length)
            return self._created(name, info.digest)
        status = self.blobs.start(name)
        self.hub.metrics.uploads.set(self.blobs.uploads_in_progress)
        return self._upload_response(202, name, status.id, 0)

    def _may_pull(self, request: Request, source: str) -> bool:
        try:
            self._allow(request, source, "pull")
        except DistributionError:
            return False
        return True

    async def upload_status(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull", "push")
        status = await self.blobs.status(name, match["id"])
        return self._upload_response(204, name, status.id, status.offset)

    async def upload_patch(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull", "push")
        start, length = content_range(request)
        status = await self.blobs.append(name, match["id"], self._body(request), start, length)
        return self._upload_response(202, name, status.id, status.offset)

    async def upload_put(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull", "push")
        digest = request.query_params.get("digest")
        if not digest:
            raise DistributionError(Code.DIGEST_INVALID, "PUT needs ?digest=<digest of the blob>")
        start, length = content_range(request)
        body = self._body(request)
        info = await self.blobs.commit(name, match["id"], digest, body, start, length)
        self.hub.metrics.uploads.set(self.blobs.uploads_in_progress)
        return self._created(name, info.digest)

    async def upload_delete(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull", "push")
        await self.blobs.cancel(name, match["id"])
        self.hub.metrics.uploads.set(self.blobs.uploads_in_progress)
        return Response(None, 204)

    # -- manifests ----------------------------------------------------------------------------

    async def manifest_get(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull")
        found = self.manifests.get(name, match["reference"])
        headers = {
            "Docker-Content-Digest": found.digest,
            "ETag": f'"{found.digest}"',
            "Content-Length": str(len(found.content)),
        }
        body = None if request.method == "HEAD" else found.content
        return Response(body, 200, headers=headers, media_type=found.media_type)

    async def manifest_put(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull", "push")
        limit = self.hub.settings.max_manifest_bytes
        declared = int_header(request, "content-length")
        if declared is not None and declared > limit:
            raise DistributionError(
                Code.SIZE_INVALID,
                f"manifest of {declared} bytes is larger than the {limit} this hub accepts",
                status=413,
                detail={"limit": limit},
            )
        content = await read_limited(self._body(request), limit)
        result = self.manifests.put(
            name, match["reference"], content, request.headers.get("content-type")
        )
        headers = {
            "Location": f"/v2/{name}/manifests/{result.digest}",
            "Docker-Content-Digest": result.digest,
            "Content-Length": "0",
        }
        if result.subject:
            headers["OCI-Subject"] = result.subject
        return Response(None, 201, headers=headers)

    async def manifest_delete(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "delete")
        self.manifests.delete(name, match["reference"])
        return Response(None, 202, headers={"Content-Length": "0"})

    # -- listings -----------------------------------------------------------------------------

    async def tags_list(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull")
        n, last = page(request)
        names = self.manifests.tags(name, None if n is None else n + 1, last)
        return paged(request, names, n, "tags", {"name": name})

    async def referrers(self, request: Request, name: str, match: re.Match[str]) -> Response:
        self._allow(request, name, "pull")
        artifact_type = request.query_params.get("artifactType")
        entries = self.manifests.referrers(name, match["digest"], artifact_type)
        body = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": entries}
        headers = {}
        if artifact_type is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        return Response(
            json.dumps(body).encode(), 200, headers=headers, media_type=mediatypes.OCI_INDEX
        )

    _Handler = Callable[["V2Api", Request, str, "re.Match[str]"], Awaitable[Response]]
    _handlers: ClassVar[dict[tuple[str, str], _Handler]] = {
        ("blob", "GET"): blob_get,
        ("blob", "HEAD"): blob_get,
        ("blob", "DELETE"): blob_delete,
        ("upload", "POST"): upload_start,
        ("upload", "GET"): upload_status,
        ("upload", "PATCH"): upload_patch,
        ("upload", "PUT"): upload_put,
        ("upload", "DELETE"): upload_delete,
        ("manifest", "GET"): manifest_get,
        ("manifest", "HEAD"): manifest_get,
        ("manifest", "PUT"): manifest_put,
        ("manifest", "DELETE"): manifest_delete,
        ("tags", "GET"): tags_list,
        ("referrers", "GET"): referrers,
    }


class V2Shortcut:
    """Middleware that hands ``/v2`` requests straight to :class:`V2Api`.

    Pulls are most of a registry's traffic; skipping the router and FastAPI's per-route
    machinery for them keeps a manifest GET to a handful of Python calls. Every other path
    goes on to the app. (The ``/v2`` routes stay registered too, for tools that walk them.)
    """

    def __init__(self, app: ASGIApp, api: V2Api) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v2" or path.startswith("/v2/")):
            response = await self.api.handle(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
