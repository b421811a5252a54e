"""Manifests, tags, the catalog and the referrers API: storage and lookups.

What a valid manifest is lives in :mod:`ukedge.hub._manifest_parse`; the web page's overview of
repositories in :mod:`ukedge.hub._overview`.

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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ukedge.faults import crash_point
from ukedge.hub._blobs import repo_id
from ukedge.hub._db import Database, blob_links, manifest_refs, manifests, repositories, tags
from ukedge.hub._errors import Code, DistributionError
from ukedge.hub._manifest_parse import ParsedManifest, parse_manifest
from ukedge.hub._names import check_digest, check_reference, is_digest

__all__ = ["ManifestService", "PutResult", "StoredManifest"]


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    content: bytes


@dataclass(frozen=True)
class PutResult:
    digest: str
    subject: str | None


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
    def _check_refs(conn: Connection, rid: int, parsed: ParsedManifest) -> None:
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
