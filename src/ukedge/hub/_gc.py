"""Online garbage collection: mark and sweep blobs no manifest references, expire old uploads.

The hub keeps serving pulls and pushes while this runs; there is no read-only window. Safety
rests on three rules, all enforced by the database:

1. **Grace.** A blob whose ``touched_at`` (last upload or mount) is younger than ``grace`` is never
   a candidate, so content a client is in the middle of pushing a manifest for stays put.
2. **Conditional delete.** Each candidate's row is deleted by one ``BEGIN IMMEDIATE`` statement
   that re-checks "older than grace and referenced by no manifest". A manifest PUT checks its
   blobs and records its references in the same kind of transaction, so either the PUT sees the
   row gone (and answers MANIFEST_BLOB_UNKNOWN, the client re-uploads) or the GC sees the new
   reference (and keeps the blob).
3. **Move, re-check, then delete.** The file is first renamed into ``trash/``; if the row came
   back meanwhile (an upload of the same content published it again), the file is moved back.
   Only then is it deleted.

Crash points: ``hub.gc.row_deleted`` (row gone, file still in place: a stray the next pass
sweeps), ``hub.gc.trashed`` (file in ``trash/``), ``hub.gc.removed`` (file deleted) and
``hub.gc.upload_expired`` (session row gone, its file not yet).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import and_, delete, exists, select

from ukedge.faults import crash_point
from ukedge.hub._blobs import blob_path, upload_path
from ukedge.hub._db import Database, blobs, manifest_refs, uploads
from ukedge.hub.storage import CheckedDriver, PathNotFoundError

__all__ = ["GcReport", "collect", "trash_blob"]

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    dry_run: bool
    blobs: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    uploads: list[str] = field(default_factory=list)
    kept_racing: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "blobs_swept": self.blobs,
            "bytes_freed": self.bytes_freed,
            "uploads_expired": self.uploads,
            "kept_racing": self.kept_racing,
            "seconds": round(self.seconds, 3),
        }


def _unreferenced() -> object:
    return ~exists(
        select(manifest_refs.c.digest).where(
            and_(manifest_refs.c.digest == blobs.c.digest, manifest_refs.c.kind == "blob")
        )
    )


async def collect(
    db: Database,
    storage: CheckedDriver,
    *,
    grace: float,
    upload_ttl: float,
    dry_run: bool = False,
    active_uploads: frozenset[str] = frozenset(),
) -> GcReport:
    """One mark-and-sweep pass; see the module docstring for why it is safe while serving."""
    started = time.monotonic()
    report = GcReport(dry_run)
    now = time.time()
    cutoff = now - grace
    with db.read() as conn:
        candidates = conn.execute(
            select(blobs.c.digest, blobs.c.size).where(
                blobs.c.touched_at < cutoff,
                _unreferenced(),  # type: ignore[arg-type]
            )
        ).all()
    for digest, size in candidates:
        if dry_run:
            report.blobs.append(digest)
            report.bytes_freed += size
            continue
        if await _sweep(db, storage, digest, cutoff):
            report.blobs.append(digest)
            report.bytes_freed += size
        else:
            report.kept_racing += 1

    expire_before = now - upload_ttl
    with db.read() as conn:
        stale = list(
            conn.execute(select(uploads.c.id).where(uploads.c.updated_at < expire_before)).scalars()
        )
    known: set[str] = set()
    with db.read() as conn:
        known = set(conn.execute(select(uploads.c.id)).scalars())
    for upload_id in stale:
        if upload_id in active_uploads:
            continue
        report.uploads.append(upload_id)
        if not dry_run:
            with db.write() as conn:
                conn.execute(delete(uploads).where(uploads.c.id == upload_id))
            crash_point("hub.gc.upload_expired")
            await _remove(storage, upload_path(upload_id))
    # Upload files without a session row: monolithic pushes cut off by a crash.
    try:
        orphans = await storage.list("uploads")
    except PathNotFoundError:
        orphans = []
    for path in orphans:
        name = path.rsplit("/", 1)[1]
        if name in known or name in active_uploads:
            continue
        try:
            info = await storage.stat(path)
        except PathNotFoundError:
            continue
        if info.modified < expire_before:
            report.uploads.append(name)
            if not dry_run:
                await _remove(storage, path)
    if not dry_run:
        await _sweep_strays(db, storage, cutoff, report)
    report.seconds = time.monotonic() - started
    log.info(
        "gc %s: %d blobs (%d bytes), %d uploads, %d kept because they were touched meanwhile",
        "dry run" if dry_run else "done",
        len(report.blobs),
        report.bytes_freed,
        len(report.uploads),
        report.kept_racing,
    )
    return report


async def _sweep(db: Database, storage: CheckedDriver, digest: str, cutoff: float) -> bool:
    with db.write() as conn:
        gone = conn.execute(
            delete(blobs).where(
                blobs.c.digest == digest,
                blobs.c.touched_at < cutoff,
                _unreferenced(),  # type: ignore[arg-type]
            )
        ).rowcount
    if not gone:
        return False
    crash_point("hub.gc.row_deleted")
    return await trash_blob(db, storage, digest)


async def trash_blob(db: Database, storage: CheckedDriver, digest: str) -> bool:
    """Move the content to trash, re-check its row, then delete it or put it back."""
    trash = f"trash/{digest.split(':', 1)[1]}-{uuid.uuid4().hex[:8]}"
    try:
        await storage.move(blob_path(digest), trash)
    except PathNotFoundError:
        return True
    crash_point("hub.gc.trashed")
    with db.read() as conn:
        back = conn.execute(select(blobs.c.digest).where(blobs.c.digest == digest)).first()
    if back is not None:
        try:
            await storage.stat(blob_path(digest))
            await _remove(storage, trash)
        except PathNotFoundError:
            await storage.move(trash, blob_path(digest))
        return False
    await _remove(storage, trash)
    crash_point("hub.gc.removed")
    return True


async def _sweep_strays(
    db: Database, storage: CheckedDriver, cutoff: float, report: GcReport
) -> None:
    """Files a crash left behind: blob content with no row (a GC killed between its delete and
    its move to trash) and old trash (a GC killed before the final delete)."""
    for path in await _list(storage, "trash"):
        with contextlib.suppress(PathNotFoundError):
            if (await storage.stat(path)).modified < cutoff - 3600:
                await _remove(storage, path)
    for prefix in await _list(storage, "blobs/sha256"):
        for path in await _list(storage, prefix):
            digest = "sha256:" + path.rsplit("/", 1)[1]
            with db.read() as conn:
                known = conn.execute(select(blobs.c.digest).where(blobs.c.digest == digest)).first()
            if known is not None:
                continue
            with contextlib.suppress(PathNotFoundError):
                info = await storage.stat(path)
                if info.modified < cutoff and await trash_blob(db, storage, digest):
                    report.blobs.append(digest)
                    report.bytes_freed += info.size


async def _list(storage: CheckedDriver, prefix: str) -> list[str]:
    try:
        return await storage.list(prefix)
    except PathNotFoundError:
        return []


async def _remove(storage: CheckedDriver, path: str) -> None:
    with contextlib.suppress(PathNotFoundError):
        await storage.delete(path)
