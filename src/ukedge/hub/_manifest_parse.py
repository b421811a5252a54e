"""What the hub accepts as a manifest: media types, the JSON shape, and the size of the body.

Pure checks, no storage: :func:`parse_manifest` either returns what a manifest references or
raises ``MANIFEST_INVALID`` naming the field, before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from ukedge.hub._errors import Code, DistributionError
from ukedge.hub._names import check_digest
from ukedge.image import mediatypes

__all__ = [
    "IMAGE_TYPES",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "MAX_SIZE",
    "SIGNATURE_TYPES",
    "ParsedManifest",
    "parse_manifest",
    "read_limited",
]

IMAGE_TYPES = frozenset({mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST})
INDEX_TYPES = mediatypes.INDEX_TYPES
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES
#: Referrer artifact types that mean "this is a signature" (cosign, notation).
SIGNATURE_TYPES = frozenset(
    {
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        "application/vnd.cncf.notary.signature",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    }
)
_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MAX_SIZE = 2**63 - 1  # what the metadata's integer columns hold


@dataclass
class ParsedManifest:
    """What a valid manifest declares and references: blobs (an image) or manifests (an index)."""

    media_type: str
    artifact_type: str | None
    subject: str | None
    annotations: dict[str, str] | None
    blob_refs: list[str]
    child_refs: list[str]
    total_size: int


def _invalid(message: str, **detail: Any) -> DistributionError:
    return DistributionError(Code.MANIFEST_INVALID, message, detail=detail or None)


def _descriptor(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a descriptor object")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType")
    if not isinstance(digest, str):
        raise _invalid(f"{where}.digest is missing")
    check_digest(digest)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise _invalid(f"{where}.size must be an integer from 0 to 2^63-1")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType is missing")
    return value


def parse_manifest(content: bytes, content_type: str | None) -> ParsedManifest:
    """Validate a manifest's JSON shape and collect what it references."""
    try:
        doc = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _invalid(f"manifest is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise _invalid("manifest JSON is nested too deeply") from exc
    if not isinstance(doc, dict):
        raise _invalid("manifest must be a JSON object")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2", schemaVersion=doc.get("schemaVersion"))
    declared = doc.get("mediaType")
    content_type = (content_type or "").split(";")[0].strip() or None
    if declared is not None and content_type and declared != content_type:
        raise _invalid(
            f"mediaType {declared!r} does not match Content-Type {content_type!r}",
            mediaType=declared,
        )
    media_type = declared or content_type
    if media_type is None:
        media_type = mediatypes.OCI_INDEX if "manifests" in doc else mediatypes.OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise _invalid(
            f"unsupported manifest media type {media_type!r}; "
            f"this hub takes {', '.join(sorted(MANIFEST_TYPES))}",
            mediaType=media_type,
        )
    subject: str | None = None
    if doc.get("subject") is not None:
        subject = _descriptor(doc["subject"], "subject")["digest"]
    annotations = doc.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise _invalid("annotations must be an object")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    blob_refs: list[str] = []
    child_refs: list[str] = []
    total = len(content)
    if media_type in IMAGE_TYPES:
        config = _descriptor(doc.get("config"), "config")
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise _invalid("layers must be a list")
        blob_refs.append(config["digest"])
        total += config["size"]
        for i, raw in enumerate(layers):
            layer = _descriptor(raw, f"layers[{i}]")
            total += layer["size"]
            if layer["mediaType"] == _FOREIGN and layer.get("urls"):
                continue  # foreign layers live elsewhere by design
            blob_refs.append(layer["digest"])
        if artifact_type is None and config["mediaType"] != mediatypes.OCI_EMPTY:
            artifact_type = config["mediaType"]
    else:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise _invalid("an index needs a manifests list")
        for i, raw in enumerate(children):
            child = _descriptor(raw, f"manifests[{i}]")
            total += child["size"]
            child_refs.append(child["digest"])
    if total > MAX_SIZE:
        raise _invalid("the sizes of the manifest's descriptors add up to more than 2^63-1")
    return ParsedManifest(
        media_type, artifact_type, subject, annotations, blob_refs, child_refs, total
    )


async def read_limited(body: AsyncIterable[bytes], limit: int) -> bytes:
    """The request body, refusing (413) as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise DistributionError(
                Code.SIZE_INVALID,
                f"manifest is larger than the {limit} bytes this hub accepts",
                status=413,
                detail={"limit": limit},
            )
        parts.append(chunk)
    return b"".join(parts)
