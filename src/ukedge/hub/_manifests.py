"""Manifests, tags, the catalog and the referrers API.

A manifest PUT checks, inside one ``BEGIN IMMEDIATE`` transaction, that every blob it references
is linked to the repository and then records those references; GC's delete of an unreferenced blob
is a conditional statement in the same kind of transaction, so one of the two always sees the
other (no blob a fresh manifest needs is swept).

A put (manifest, references and tag) and a delete are each one transaction, so a kill leaves all
of it or none. Crash points: ``hub.manifest.put.checked`` (references checked),
``hub.manifest.put.stored`` (manifest and references written), ``hub.tag.moved`` (tag points at
the new manifest) and ``hub.manifest.put.committed``; ``hub.manifest.delete.removed`` /
``hub.tag.deleted`` (rows deleted) and ``hub.manifest.delete.committed``. All but the
``committed`` ones are inside the open transaction.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ukedge.faults import crash_point
from ukedge.hub._blobs import repo_id
from ukedge.hub._db import Database, blob_links, manifest_refs, manifests, repositories, tags
from ukedge.hub._errors import Code, DistributionError
from ukedge.hub._names import check_digest, check_reference, is_digest
from ukedge.image import mediatypes

__all__ = [
    "IMAGE_TYPES",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "SIGNATURE_TYPES",
    "ManifestService",
    "PutResult",
    "StoredManifest",
]

IMAGE_TYPES = frozenset({mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST})
INDEX_TYPES = frozenset({mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST})
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
_MAX_SIZE = 2**63 - 1  # what the metadata's integer columns hold


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    content: bytes


@dataclass(frozen=True)
class PutResult:
    digest: str
    subject: str | None


@dataclass
class _Parsed:
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
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
        raise _invalid(f"{where}.size must be an integer from 0 to 2^63-1")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType is missing")
    return value


def _known_or_404(reference: str) -> None:
    """A reference no PUT could have stored is simply unknown (404), as clients expect."""
    try:
        check_reference(reference)
    except DistributionError as exc:
        if exc.code is Code.DIGEST_INVALID:
            raise
        raise DistributionError(
            Code.MANIFEST_UNKNOWN, f"no manifest {reference!r}", detail={"reference": reference}
        ) from exc


def parse_manifest(content: bytes, content_type: str | None) -> _Parsed:
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
    if total > _MAX_SIZE:
        raise _invalid("the sizes of the manifest's descriptors add up to more than 2^63-1")
    return _Parsed(media_type, artifact_type, subject, annotations, blob_refs, child_refs, total)


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


class ManifestService:
    """Manifest storage and lookups of one hub."""

    #: Manifests up to this size are cached in memory, up to ``_CACHE_BYTES`` in all.
    _CACHE_ITEM = 256 * 1024
    _CACHE_BYTES = 32 * 1024 * 1024

    def __init__(self, db: Database) -> None:
        self.db = db
        # (repository, reference) -> manifest. Only this process writes manifests and tags
        # (GC, from any process, touches blobs only), so clearing on each write keeps it exact.
        self._cache: dict[tuple[str, str], StoredManifest] = {}
        self._cached_bytes = 0

    def _invalidate(self) -> None:
        self._cache.clear()
        self._cached_bytes = 0

    # -- writing ------------------------------------------------------------------------------

    def put(
        self, repository: str, reference: str, content: bytes, content_type: str | None
    ) -> PutResult:
        check_reference(reference)
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        if is_digest(reference) and reference != digest:
            raise DistributionError(
                Code.DIGEST_INVALID,
                f"manifest content is {digest}, not {reference}",
                detail={"expected": reference, "actual": digest},
            )
        parsed = parse_manifest(content, content_type)
        now = time.time()
        self._invalidate()
        with self.db.write() as conn:
            rid = repo_id(conn, repository, create=True)
            assert rid is not None
            self._check_refs(conn, rid, parsed)
            crash_point("hub.manifest.put.checked")
            conn.execute(
                sqlite_insert(manifests)
                .values(
                    repo_id=rid,
                    digest=digest,
                    media_type=parsed.media_type,
                    size=len(content),
                    artifact_type=parsed.artifact_type,
                    subject=parsed.subject,
                    annotations=json.dumps(parsed.annotations) if parsed.annotations else None,
                    total_size=parsed.total_size,
                    content=content,
                    pushed_at=now,
                )
                .on_conflict_do_update(
                    index_elements=[manifests.c.repo_id, manifests.c.digest],
                    set_={"pushed_at": now},
                )
            )
            refs = [{"digest": d, "kind": "blob"} for d in set(parsed.blob_refs)] + [
                {"digest": d, "kind": "manifest"} for d in set(parsed.child_refs)
            ]
            for ref in refs:
                conn.execute(
                    sqlite_insert(manifest_refs)
                    .values(repo_id=rid, manifest_digest=digest, **ref)
                    .on_conflict_do_nothing()
                )
            crash_point("hub.manifest.put.stored")
            if not is_digest(reference):
                conn.execute(
                    sqlite_insert(tags)
                    .values(repo_id=rid, name=reference, digest=digest, updated_at=now)
                    .on_conflict_do_update(
                        index_elements=[tags.c.repo_id, tags.c.name],
                        set_={"digest": digest, "updated_at": now},
                    )
                )
                crash_point("hub.tag.moved")
        crash_point("hub.manifest.put.committed")
        return PutResult(digest, parsed.subject)

    @staticmethod
    def _check_refs(conn: Connection, rid: int, parsed: _Parsed) -> None:
        wanted = set(parsed.blob_refs)
        if wanted:
            have = set(
                conn.execute(
                    select(blob_links.c.digest).where(
                        blob_links.c.repo_id == rid, blob_links.c.digest.in_(wanted)
                    )
                ).scalars()
            )
            missing = sorted(wanted - have)
            if missing:
                raise DistributionError(
                    Code.MANIFEST_BLOB_UNKNOWN,
                    f"blob {missing[0]} is not in this repository; push it first",
                    detail={"digest": missing[0]},
                )
        children = set(parsed.child_refs)
        if children:
            have = set(
                conn.execute(
                    select(manifests.c.digest).where(
                        manifests.c.repo_id == rid, manifests.c.digest.in_(children)
                    )
                ).scalars()
            )
            missing = sorted(children - have)
            if missing:
                raise DistributionError(
                    Code.MANIFEST_BLOB_UNKNOWN,
                    f"manifest {missing[0]} named by the index is not in this repository",
                    detail={"digest": missing[0]},
                )

    def delete(self, repository: str, reference: str) -> None:
        """By digest: the manifest, its tags and references. By tag: only the tag."""
        _known_or_404(reference)
        self._invalidate()
        with self.db.write() as conn:
            rid = repo_id(conn, repository)
            if rid is None:
                raise DistributionError(Code.NAME_UNKNOWN, detail={"name": repository})
            if not is_digest(reference):
                gone = conn.execute(
                    delete(tags).where(tags.c.repo_id == rid, tags.c.name == reference)
                ).rowcount
                crash_point("hub.tag.deleted")
            else:
                gone = conn.execute(
                    delete(manifests).where(
                        manifests.c.repo_id == rid, manifests.c.digest == reference
                    )
                ).rowcount
                conn.execute(delete(tags).where(tags.c.repo_id == rid, tags.c.digest == reference))
                conn.execute(
                    delete(manifest_refs).where(
                        manifest_refs.c.repo_id == rid,
                        manifest_refs.c.manifest_digest == reference,
                    )
                )
                crash_point("hub.manifest.delete.removed")
            if not gone:
                raise DistributionError(Code.MANIFEST_UNKNOWN, detail={"reference": reference})
        crash_point("hub.manifest.delete.committed")

    # -- reading ------------------------------------------------------------------------------

    _BY_TAG = text(
        "SELECT m.digest, m.media_type, m.content FROM tags t "
        "JOIN repositories r ON r.id = t.repo_id "
        "JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest "
        "WHERE r.name = :name AND t.name = :ref"
    )
    _BY_DIGEST = text(
        "SELECT m.digest, m.media_type, m.content FROM manifests m "
        "JOIN repositories r ON r.id = m.repo_id WHERE r.name = :name AND m.digest = :ref"
    )

    def get(self, repository: str, reference: str) -> StoredManifest:
        """The hot path of every pull: an in-memory hit, else one indexed query."""
        key = (repository, reference)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        _known_or_404(reference)
        query = self._BY_DIGEST if is_digest(reference) else self._BY_TAG
        with self.db.read() as conn:
            row = conn.execute(query, {"name": repository, "ref": reference}).first()
        if row is None:
            raise DistributionError(Code.MANIFEST_UNKNOWN, detail={"reference": reference})
        found = StoredManifest(row[0], row[1], bytes(row[2]))
        if len(found.content) <= self._CACHE_ITEM:
            if self._cached_bytes + len(found.content) > self._CACHE_BYTES:
                self._invalidate()
            self._cache[key] = found
            self._cached_bytes += len(found.content)
        return found

    def tags(self, repository: str, n: int | None, last: str | None) -> list[str]:
        with self.db.read() as conn:
            rid = repo_id(conn, repository)
            if rid is None:
                raise DistributionError(Code.NAME_UNKNOWN, detail={"name": repository})
            query = select(tags.c.name).where(tags.c.repo_id == rid).order_by(tags.c.name)
            if last:
                query = query.where(tags.c.name > last)
            if n is not None:
                query = query.limit(n)
            return list(conn.execute(query).scalars())

    def catalog(self, n: int | None, last: str | None) -> list[str]:
        """Repositories that hold at least one manifest, in lexical order."""
        with self.db.read() as conn:
            query = (
                select(repositories.c.name)
                .where(
                    select(manifests.c.digest)
                    .where(manifests.c.repo_id == repositories.c.id)
                    .exists()
                )
                .order_by(repositories.c.name)
            )
            if last:
                query = query.where(repositories.c.name > last)
            if n is not None:
                query = query.limit(n)
            return list(conn.execute(query).scalars())

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None
    ) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose ``subject`` is ``digest``."""
        check_digest(digest)
        with self.db.read() as conn:
            query = (
                select(
                    manifests.c.digest,
                    manifests.c.media_type,
                    manifests.c.size,
                    manifests.c.artifact_type,
                    manifests.c.annotations,
                )
                .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repo_id))
                .where(repositories.c.name == repository, manifests.c.subject == digest)
                .order_by(manifests.c.pushed_at, manifests.c.digest)
            )
            if artifact_type is not None:
                query = query.where(manifests.c.artifact_type == artifact_type)
            rows = conn.execute(query).all()
        result = []
        for row in rows:
            entry: dict[str, Any] = {"mediaType": row[1], "digest": row[0], "size": row[2]}
            if row[3]:
                entry["artifactType"] = row[3]
            if row[4]:
                entry["annotations"] = json.loads(row[4])
            result.append(entry)
        return result

    def overview(self) -> list[dict[str, Any]]:
        """Every repository with its tags, sizes, push times and whether a signature refers."""
        sig_types = sorted(SIGNATURE_TYPES)
        with self.db.read() as conn:
            rows = conn.execute(
                select(
                    repositories.c.name,
                    tags.c.name,
                    tags.c.digest,
                    manifests.c.media_type,
                    manifests.c.total_size,
                    manifests.c.pushed_at,
                    manifests.c.artifact_type,
                )
                .select_from(
                    repositories.join(tags, tags.c.repo_id == repositories.c.id).join(
                        manifests,
                        (manifests.c.repo_id == tags.c.repo_id)
                        & (manifests.c.digest == tags.c.digest),
                    )
                )
                .order_by(repositories.c.name, tags.c.name)
            ).all()
            signed = {
                (r[0], r[1])
                for r in conn.execute(
                    select(manifests.c.repo_id, manifests.c.subject).where(
                        manifests.c.artifact_type.in_(sig_types)
                    )
                ).all()
            }
            ids: dict[str, int] = dict(
                conn.execute(select(repositories.c.name, repositories.c.id)).all()
            )
            counts: dict[int, int] = dict(
                conn.execute(
                    select(manifests.c.repo_id, func.count()).group_by(manifests.c.repo_id)
                ).all()
            )
        repos: dict[str, dict[str, Any]] = {}
        for name, tag, digest, media_type, size, pushed, artifact in rows:
            repo = repos.setdefault(
                name,
                {"name": name, "tags": [], "manifests": counts.get(ids[name], 0), "last_push": 0.0},
            )
            repo["tags"].append(
                {
                    "tag": tag,
                    "digest": digest,
                    "media_type": media_type,
                    "artifact_type": artifact,
                    "size": size,
                    "pushed_at": pushed,
                    "signed": (ids[name], digest) in signed,
                }
            )
            repo["last_push"] = max(repo["last_push"], pushed)
        return list(repos.values())
