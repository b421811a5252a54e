"""The ``/v2`` distribution API in the hub's OpenAPI document.

``/v2`` requests never reach FastAPI's router (:class:`~ukedge.hub._v2.V2Shortcut` takes them
first), so FastAPI cannot describe them from route signatures. They are described here, from one
table, and merged into ``/openapi.json``: clients and tools (and the fuzz test, which generates
requests from this document) see every endpoint the hub serves. The shapes follow the OCI
Distribution Specification v1.1; errors are the spec's ``{"errors": [...]}`` body.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from ukedge.hub._v2_request import MAX_PAGE
from ukedge.image import NAME_PATTERN, TAG_PATTERN, mediatypes

__all__ = ["describe_v2", "v2_paths"]

_JSON = "application/json"
_OCTETS = "application/octet-stream"
_ERROR_REF = {"$ref": "#/components/schemas/DistributionErrors"}

_SCHEMAS: dict[str, Any] = {
    "DistributionErrors": {
        "type": "object",
        "description": "The distribution spec's error body; ``code`` is one of its error codes.",
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "detail": {},
                    },
                    "required": ["code", "message"],
                },
            }
        },
        "required": ["errors"],
    },
    "Descriptor": {
        "type": "object",
        "properties": {
            "mediaType": {"type": "string"},
            "digest": {"type": "string", "pattern": "^sha256:[a-f0-9]{64}$"},
            "size": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            "artifactType": {"type": "string"},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["mediaType", "digest", "size"],
    },
    "Manifest": {
        "type": "object",
        "description": "An OCI image manifest or image index (Docker v2 schema 2 alike).",
        "properties": {
            "schemaVersion": {"type": "integer", "const": 2},
            "mediaType": {"type": "string"},
            "artifactType": {"type": "string"},
            "config": {"$ref": "#/components/schemas/Descriptor"},
            "layers": {"type": "array", "items": {"$ref": "#/components/schemas/Descriptor"}},
            "manifests": {"type": "array", "items": {"$ref": "#/components/schemas/Descriptor"}},
            "subject": {"$ref": "#/components/schemas/Descriptor"},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["schemaVersion"],
    },
}

_ERROR_TEXT = {
    400: "Malformed request: name, digest, reference, manifest or size invalid",
    401: "Authentication required (Bearer challenge in WWW-Authenticate)",
    404: "Unknown repository, blob, manifest or upload session",
    405: "Operation not supported",
    408: "The request body stalled",
    413: "Manifest too large",
    416: "Range or Content-Range not satisfiable",
}


def _param(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path" or schema.pop("required", False),
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _body_of(pattern: re.Pattern[str]) -> str:
    """A Python ``^…\\Z`` pattern as the bare expression JSON Schema regexes can embed."""
    return pattern.pattern.removeprefix("^").removesuffix("\\Z")


_DIGEST_RE = "sha256:[a-f0-9]{64}"
_NAME = _param(
    "name",
    "path",
    "Repository name: lowercase components separated by '/'.",
    pattern=f"^{_body_of(NAME_PATTERN)}$",
    maxLength=255,
)
_DIGEST = _param("digest", "path", "Content digest.", pattern=f"^{_DIGEST_RE}$")
_REFERENCE = _param(
    "reference",
    "path",
    "A tag or a digest.",
    pattern=f"^(?:{_body_of(TAG_PATTERN)}|{_DIGEST_RE})$",
)
_UUID = _param("uuid", "path", "Upload session id from the Location of the POST.")
_PAGE = [
    _param(
        "n",
        "query",
        "At most this many results.",
        type="integer",
        minimum=0,
        maximum=MAX_PAGE,
    ),
    _param("last", "query", "Continue after this result (from the Link header)."),
]
_MANIFEST_TYPES = [mediatypes.OCI_MANIFEST, mediatypes.OCI_INDEX]


def _op(
    summary: str,
    ok: dict[int, tuple[str, dict[str, Any] | None]],
    errors: tuple[int, ...],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (description, content) in ok.items():
        responses[str(status)] = {"description": description}
        if content is not None:
            responses[str(status)]["content"] = content
    for status in (*errors, 401, 405):
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {_JSON: {"schema": _ERROR_REF}},
        }
    op: dict[str, Any] = {"tags": ["distribution"], "summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    return op


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


_OCTET_BODY = {
    "required": False,
    "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
}
_MANIFEST_BODY = {
    "required": True,
    "content": {t: {"schema": {"$ref": "#/components/schemas/Manifest"}} for t in _MANIFEST_TYPES},
}
_MANIFEST_OUT = {t: {"schema": {"$ref": "#/components/schemas/Manifest"}} for t in _MANIFEST_TYPES}
_BLOB_OUT = {_OCTETS: {"schema": {"type": "string", "format": "binary"}}}
_STRINGS = {"type": "array", "items": {"type": "string"}}


def v2_paths() -> dict[str, Any]:
    """The ``paths`` entries of the distribution API, as this hub implements it."""
    manifest_get = _op(
        "Fetch a manifest by tag or digest",
        {200: ("The manifest; Docker-Content-Digest names it", _MANIFEST_OUT)},
        (400, 404),
        parameters=[_NAME, _REFERENCE],
    )
    blob_get = _op(
        "Fetch a blob (Range supported)",
        {
            200: ("The blob", _BLOB_OUT),
            206: ("The requested range of the blob", _BLOB_OUT),
        },
        (400, 404, 416),
        parameters=[_NAME, _DIGEST, _param("Range", "header", "bytes=<start>-<end>")],
    )
    return {
        "/v2/": {
            "get": _op("API version check (and auth probe)", {200: ("Supported", None)}, ()),
        },
        "/v2/_catalog": {
            "get": _op(
                "Repositories holding at least one manifest",
                {
                    200: (
                        "One page; Link names the next",
                        _json({"type": "object", "properties": {"repositories": _STRINGS}}),
                    )
                },
                (400,),
                parameters=_PAGE,
            )
        },
        "/v2/{name}/tags/list": {
            "get": _op(
                "Tags of a repository",
                {
                    200: (
                        "One page; Link names the next",
                        _json(
                            {
                                "type": "object",
                                "properties": {"name": {"type": "string"}, "tags": _STRINGS},
                            }
                        ),
                    )
                },
                (400, 404),
                parameters=[_NAME, *_PAGE],
            )
        },
        "/v2/{name}/manifests/{reference}": {
            "get": manifest_get,
            "head": {**manifest_get, "summary": "Check a manifest exists"},
            "put": _op(
                "Push a manifest (every blob it names must be in the repository)",
                {201: ("Stored; Location and Docker-Content-Digest name it", None)},
                (400, 404, 408, 413),
                parameters=[_NAME, _REFERENCE],
                body=_MANIFEST_BODY,
            ),
            "delete": _op(
                "Delete a manifest (by digest) or a tag",
                {202: ("Deleted", None)},
                (400, 404),
                parameters=[_NAME, _REFERENCE],
            ),
        },
        "/v2/{name}/blobs/{digest}": {
            "get": blob_get,
            "head": {**blob_get, "summary": "Check a blob exists; Content-Length is its size"},
            "delete": _op(
                "Unlink a blob from the repository (GC reclaims it)",
                {202: ("Unlinked", None)},
                (400, 404),
                parameters=[_NAME, _DIGEST],
            ),
        },
        "/v2/{name}/blobs/uploads/": {
            "post": _op(
                "Start an upload, push a blob whole (?digest=) or mount one (?mount=&from=)",
                {
                    201: ("Blob stored or mounted", None),
                    202: ("Session started; Location is where to send chunks", None),
                },
                (400, 404, 408),
                parameters=[
                    _NAME,
                    _param("digest", "query", "Digest of the body: a monolithic push."),
                    _param("mount", "query", "Digest of a blob to mount from another repository."),
                    _param("from", "query", "The repository to mount from."),
                ],
                body=_OCTET_BODY,
            )
        },
        "/v2/{name}/blobs/uploads/{uuid}": {
            "get": _op(
                "Upload progress; Range is what the hub has",
                {204: ("Session status", None)},
                (400, 404),
                parameters=[_NAME, _UUID],
            ),
            "patch": _op(
                "Append a chunk (Content-Range must start at the current offset)",
                {202: ("Chunk stored; Range is what the hub has", None)},
                (400, 404, 408, 416),
                parameters=[_NAME, _UUID, _param("Content-Range", "header", "<start>-<end>")],
                body=_OCTET_BODY,
            ),
            "put": _op(
                "Finish the upload with an optional last chunk; verified against ?digest=",
                {201: ("Blob stored", None)},
                (400, 404, 408, 416),
                parameters=[
                    _NAME,
                    _UUID,
                    _param("digest", "query", "Digest of the whole blob.", required=True),
                ],
                body=_OCTET_BODY,
            ),
            "delete": _op(
                "Cancel the upload",
                {204: ("Cancelled", None)},
                (400, 404),
                parameters=[_NAME, _UUID],
            ),
        },
        "/v2/{name}/referrers/{digest}": {
            "get": _op(
                "Manifests whose subject is the digest, as an image index",
                {
                    200: (
                        "An OCI image index",
                        {
                            mediatypes.OCI_INDEX: {
                                "schema": {"$ref": "#/components/schemas/Manifest"}
                            }
                        },
                    )
                },
                (400, 404),
                parameters=[_NAME, _DIGEST, _param("artifactType", "query", "Only this type.")],
            )
        },
    }


def describe_v2(app: FastAPI) -> None:
    """Merge :func:`v2_paths` into ``app``'s OpenAPI document (built once, on first request)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI caches it in app.openapi_schema
        if "/v2/" not in schema["paths"]:
            schema["paths"] = {**v2_paths(), **schema["paths"]}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
