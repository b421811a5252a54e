"""Check, and repair, that the hub's metadata and its blob storage agree.

The invariants a crash must never break:

1. every blob the metadata lists is in storage with its recorded size and, when content is
   verified, hashes to its digest;
2. every blob a manifest references is listed (so a pull of any manifest the hub serves can fetch
   all of its blobs);
3. every tag names a manifest of its repository.

One function checks them, for three callers: ``hub serve`` at start (sizes only, repairing: a
restart after a crash or a disk fault reconciles before it answers), ``ukedge hub fsck
[--repair]`` (content hashed too), and the crash tests, whose invariant checker is this function.

Repair removes what cannot be served, nothing else: the row of a blob whose content is missing,
short or corrupt (its repository links go with it, so ``HEAD`` answers 404 and a client pushing
the image uploads the blob again; corrupt content goes to GC's trash). Manifests and tags are never
deleted: a manifest whose blob is gone is reported with what to do, and a push of the image
makes it whole again. Content files no row lists (a kill between a blob's rename and its commit)
are only counted: GC's stray sweep removes them once they are older than its grace.

Safe beside a serving hub: a row is deleted only if its ``touched_at`` is still the one this check
read (an upload that re-published the blob meanwhile wins), and content is removed through GC's
move-to-trash-and-re-check.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field

from sqlalchemy import delete, select

from ukedge.hub._blobs import blob_path
from ukedge.hub._db import Database, blobs, manifest_refs, manifests, repositories, tags
from ukedge.hub._gc import trash_blob
from ukedge.hub.storage import CheckedDriver, PathNotFoundError

__all__ = ["FsckProblem", "FsckReport", "check"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FsckProblem:
    """One broken invariant; ``kind`` is one of the names below, ``message`` says what to do."""

    kind: str  # blob-missing | blob-size | blob-digest | manifest-blob-missing | tag-dangling
    digest: str
    message: str
    repository: str | None = None
    repaired: bool = False


@dataclass
class FsckReport:
    verified: bool
    repair: bool
    blobs_checked: int = 0
    manifests_checked: int = 0
    #: Content files no row lists (GC's stray sweep removes them after its grace).
    strays: int = 0
    problems: list[FsckProblem] = field(default_factory=list)

    @property
    def unrepaired(self) -> list[FsckProblem]:
        return [p for p in self.problems if not p.repaired]

    @property
    def ok(self) -> bool:
        """True when every invariant holds now (after repair, if repair was asked for)."""
        return not self.unrepaired

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "verified": self.verified,
            "repair": self.repair,
            "blobs_checked": self.blobs_checked,
            "manifests_checked": self.manifests_checked,
            "strays": self.strays,
            "problems": [asdict(p) for p in self.problems],
        }


async def check(
    db: Database, storage: CheckedDriver, *, verify: bool = True, repair: bool = False
) -> FsckReport:
    """Check the invariants of the module docstring; with ``repair``, drop unservable blobs."""
    report = FsckReport(verify, repair)
    with db.read() as conn:
        rows = conn.execute(select(blobs.c.digest, blobs.c.size, blobs.c.touched_at)).all()
    listed = set()
    for digest, size, touched in rows:
        listed.add(digest)
        report.blobs_checked += 1
        problem = await _blob_problem(storage, digest, int(size), verify)
        if problem is None:
            continue
        kind, message = problem
        trash = kind != "blob-missing"
        repaired = repair and await _drop(db, storage, digest, touched, trash=trash)
        if repaired:
            listed.discard(digest)
        report.problems.append(FsckProblem(kind, digest, message, repaired=repaired))
    bad = {p.digest for p in report.problems}
    _check_references(db, report, listed - bad)
    report.strays = await _count_strays(storage, listed)
    for p in report.problems:
        fixed = " (repaired)" if p.repaired else ""
        log.warning("fsck: %s %s%s: %s", p.kind, p.digest, fixed, p.message)
    return report


async def _blob_problem(
    storage: CheckedDriver, digest: str, size: int, verify: bool
) -> tuple[str, str] | None:
    path = blob_path(digest)
    try:
        info = await storage.stat(path)
    except PathNotFoundError:
        return "blob-missing", "the metadata lists it but storage has no content; push it again"
    if info.size != size:
        return (
            "blob-size",
            f"storage holds {info.size} bytes, the metadata says {size}; push it again",
        )
    if verify:
        hasher = hashlib.sha256()
        try:
            async for chunk in await storage.read(path):
                hasher.update(chunk)
        except PathNotFoundError:
            return "blob-missing", "content vanished while it was read; push it again"
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            return "blob-digest", f"content hashes to {actual}; push it again"
    return None


async def _drop(
    db: Database, storage: CheckedDriver, digest: str, touched: float, *, trash: bool
) -> bool:
    """Delete a bad blob's row (only if nobody re-published it meanwhile), then its content."""
    with db.write() as conn:
        gone = conn.execute(
            delete(blobs).where(blobs.c.digest == digest, blobs.c.touched_at == touched)
        ).rowcount
    if not gone:
        return False
    if trash:
        await trash_blob(db, storage, digest)
    return True


def _check_references(db: Database, report: FsckReport, servable: set[str]) -> None:
    """Manifests naming a blob that is not ``servable`` (no row, or content found bad)."""
    with db.read() as conn:
        report.manifests_checked = len(conn.execute(select(manifests.c.digest)).all())
        refs = conn.execute(
            select(repositories.c.name, manifest_refs.c.manifest_digest, manifest_refs.c.digest)
            .select_from(
                manifest_refs.join(repositories, repositories.c.id == manifest_refs.c.repo_id)
            )
            .where(manifest_refs.c.kind == "blob")
            .order_by(repositories.c.name, manifest_refs.c.manifest_digest)
        ).all()
        dangling = conn.execute(
            select(repositories.c.name, tags.c.name, tags.c.digest)
            .select_from(tags.join(repositories, repositories.c.id == tags.c.repo_id))
            .where(
                ~select(manifests.c.digest)
                .where(manifests.c.repo_id == tags.c.repo_id, manifests.c.digest == tags.c.digest)
                .exists()
            )
        ).all()
    for repo, manifest, digest in refs:
        if digest in servable:
            continue
        report.problems.append(
            FsckProblem(
                "manifest-blob-missing",
                digest,
                f"manifest {manifest} needs this blob, which the hub does not have; "
                f"push the image to {repo} again",
                repository=repo,
            )
        )
    for repo, tag, digest in dangling:
        report.problems.append(
            FsckProblem(
                "tag-dangling",
                digest,
                f"tag {tag} names a manifest {repo} does not hold; push the tag again",
                repository=repo,
            )
        )


async def _count_strays(storage: CheckedDriver, listed: set[str]) -> int:
    count = 0
    for prefix in await _list(storage, "blobs/sha256"):
        for path in await _list(storage, prefix):
            if "sha256:" + path.rsplit("/", 1)[1] not in listed:
                count += 1
    return count


async def _list(storage: CheckedDriver, prefix: str) -> list[str]:
    try:
        return await storage.list(prefix)
    except PathNotFoundError:
        return []
