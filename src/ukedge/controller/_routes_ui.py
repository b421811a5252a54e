"""The dashboard at ``/``: one static page and its script and style, served without auth.

The page holds no data and no secret: it asks the operator for the admin token, keeps it in the
tab's ``sessionStorage`` and calls the same API as the CLI with it (``Authorization: Bearer``),
the results stream too (``fetch`` streaming, since ``EventSource`` cannot send headers). So no
cookie ever authenticates a request and cross-site request forgery has nothing to ride on. The
files are read once from the package; they change only with the package, so clients revalidate
(``no-cache`` with an ETag) rather than keep a stale script. A strict Content-Security-Policy
(script and style from this origin only, no inline code, no framing) limits what an injected
value could do, and the script renders data as text nodes only.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from fastapi import APIRouter, Request, Response

__all__ = ["ui_router"]

#: File name -> media type; the only files served (nothing under the path is looked up).
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
}


def _load() -> dict[str, tuple[bytes, str]]:
    static = resources.files("ukedge.controller") / "static"
    files = {}
    for name in _FILES:
        body = (static / name).read_bytes()
        files[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


def ui_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = _load()

    def serve(request: Request, name: str) -> Response:
        body, etag = files[name]
        headers = {**_HEADERS, "ETag": etag}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=_FILES[name], headers=headers)

    @router.get("/")
    def index(request: Request) -> Response:
        return serve(request, "index.html")

    @router.get("/ui/dashboard.js")
    def script(request: Request) -> Response:
        return serve(request, "dashboard.js")

    @router.get("/ui/dashboard.css")
    def style(request: Request) -> Response:
        return serve(request, "dashboard.css")

    return router
