"""Blobs and upload sessions: what the hub stores where, and who may read it.

Layout in the storage driver: ``blobs/sha256/<2 hex>/<64 hex>`` holds content, named by its
digest; ``uploads/<id>`` holds the bytes an upload session received so far (its size *is* the
session offset, so a session survives a hub restart). A blob is readable in a repository only when
``blob_links`` links them (it was uploaded or mounted there), so a digest cannot be fished out of
someone else's repository.

Publishing a blob (upload commit) first moves the verified content into place, durably (the
driver fsyncs the file and the directory before :meth:`~ukedge.hub.storage.StorageDriver.move`
returns), and only then records it in the database with a fresh ``touched_at``. So the metadata
never lists a blob whose content is not on disk: a kill between the two leaves a file without a row
(GC's stray sweep removes it after the grace; a retried push simply replaces it), never a row
without a file (which ``HEAD`` would vouch for and ``GET`` could not serve). A mount only adds a
row for content already in place. GC deletes rows only when ``touched_at`` is older than its grace
and re-checks the row after moving a file out, so the two can run at the same time without losing
a blob (see :mod:`ukedge.hub._gc`); the move refreshes the file's mtime, so GC's sweep of stray
(row-less, old) files never takes content that is between its move and its row.

Crash points (:func:`ukedge.faults.crash_point`) mark each step of a commit: ``hub.blob.verified``
(digest checked, nothing published), ``hub.blob.after_rename`` (content in place, no row yet) and
``hub.blob.committed`` (row committed, response not sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ukedge.faults import crash_point
from ukedge.hub._db import Database, blob_links, blobs, repositories, uploads
from ukedge.hub._errors import Code, DistributionError
from ukedge.hub._names import check_digest
from ukedge.hub.storage import CheckedDriver, PathNotFoundError

__all__ = [
    "BlobInfo",
    "BlobService",
    "UploadState",
    "UploadStatus",
    "blob_path",
    "repo_id",
    "upload_path",
]


class UploadState(enum.Enum):
    """An upload session: ACTIVE takes chunks; COMMITTING is verifying and publishing."""

    ACTIVE = "active"
    COMMITTING = "committing"


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int


@dataclass(frozen=True)
class UploadStatus:
    id: str
    repository: str
    offset: int


def blob_path(digest: str) -> str:
    hexpart = check_digest(digest).split(":", 1)[1]
    return f"blobs/sha256/{hexpart[:2]}/{hexpart}"


def upload_path(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def repo_id(conn: Connection, name: str, *, create: bool = False) -> int | None:
    """The id of repository ``name``; made inside the caller's transaction when ``create``."""
    found = conn.execute(select(repositories.c.id).where(repositories.c.name == name)).scalar()
    if found is not None or not create:
        return None if found is None else int(found)
    return int(
        conn.execute(
            insert(repositories)
            .values(name=name, created_at=time.time())
            .returning(repositories.c.id)
        ).scalar_one()
    )


class _Hashing:
    """Passes chunks through while hashing and counting them; optionally limits the total."""

    def __init__(self, source: AsyncIterable[bytes], hasher: Any, limit: int | None = None) -> None:
        self.source = source
        self.hasher = hasher
        self.count = 0
        self.limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.source:
            if not chunk:
                continue
            self.count += len(chunk)
            if self.limit is not None and self.count > self.limit:
                raise DistributionError(
                    Code.SIZE_INVALID,
                    f"request body is longer than the declared {self.limit} bytes",
                    status=400,
                )
            self.hasher.update(chunk)
            yield chunk


class BlobService:
    """Blob reads, links and upload sessions of one hub."""

    def __init__(self, db: Database, storage: CheckedDriver) -> None:
        self.db = db
        self.storage = storage
        # Running hash of each session this process has seen, with the offset it covers; a
        # session resumed after a restart is re-hashed from storage at commit instead.
        self._hashers: dict[str, tuple[Any, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._states: dict[str, UploadState] = {}

    @property
    def uploads_in_progress(self) -> int:
        return len(self._hashers)

    @property
    def active_uploads(self) -> frozenset[str]:
        """Sessions with a request in flight right now; GC never expires them."""
        return frozenset(k for k, lock in self._locks.items() if lock.locked())

    def forget(self, upload_ids: list[str]) -> None:
        """Drop in-memory state of sessions that GC expired."""
        for upload_id in upload_ids:
            self._forget(upload_id)

    # -- reading ------------------------------------------------------------------------------

    def stat(self, repository: str, digest: str) -> BlobInfo:
        """Size of a blob linked to ``repository``; BLOB_UNKNOWN otherwise."""
        check_digest(digest)
        with self.db.read() as conn:
            size = _linked_size(conn, repository, digest)
        if size is None:
            raise DistributionError(Code.BLOB_UNKNOWN, detail={"digest": digest})
        return BlobInfo(digest, size)

    async def open(self, digest: str, offset: int, length: int) -> AsyncIterator[bytes]:
        return await self.storage.read(blob_path(digest), offset, length)

    # -- linking ------------------------------------------------------------------------------

    def _publish_row(self, conn: Connection, repository: str, digest: str, size: int) -> None:
        rid = repo_id(conn, repository, create=True)
        now = time.time()
        conn.execute(
            sqlite_insert(blobs)
            .values(digest=digest, size=size, touched_at=now)
            .on_conflict_do_update(index_elements=[blobs.c.digest], set_={"touched_at": now})
        )
        conn.execute(
            sqlite_insert(blob_links).values(repo_id=rid, digest=digest).on_conflict_do_nothing()
        )

    async def _publish(
        self, repository: str, digest: str, size: int, source: str, upload_id: str | None = None
    ) -> None:
        crash_point("hub.blob.verified")
        await self.storage.move(source, blob_path(digest))
        crash_point("hub.blob.after_rename")
        with self.db.write() as conn:
            self._publish_row(conn, repository, digest, size)
            if upload_id is not None:
                conn.execute(delete(uploads).where(uploads.c.id == upload_id))
        crash_point("hub.blob.committed")

    def mount(self, repository: str, digest: str, source_repo: str) -> bool:
        """Link a blob of ``source_repo`` into ``repository``; False if the source lacks it."""
        check_digest(digest)
        with self.db.write() as conn:
            size = _linked_size(conn, source_repo, digest)
            if size is None:
                return False
            self._publish_row(conn, repository, digest, size)
        return True

    def unlink(self, repository: str, digest: str) -> None:
        """Blob DELETE: the repository no longer reads it; GC reclaims unreferenced content."""
        check_digest(digest)
        with self.db.write() as conn:
            rid = repo_id(conn, repository)
            result = conn.execute(
                delete(blob_links).where(blob_links.c.repo_id == rid, blob_links.c.digest == digest)
            )
            if rid is None or result.rowcount == 0:
                raise DistributionError(Code.BLOB_UNKNOWN, detail={"digest": digest})

    # -- uploads ------------------------------------------------------------------------------

    async def put_monolithic(
        self, repository: str, digest: str, body: AsyncIterable[bytes], length: int | None
    ) -> BlobInfo:
        """``POST ?digest=``: the whole blob in one request, verified before it is published."""
        check_digest(digest)
        temp = upload_path(f"mono-{uuid.uuid4().hex}")
        hashing = _Hashing(body, hashlib.sha256(), length)
        try:
            size = await self.storage.write(temp, hashing)
            self._verify(digest, "sha256:" + hashing.hasher.hexdigest(), size, length)
            await self._publish(repository, digest, size, temp)
        except BaseException:
            await self._discard(temp)
            raise
        return BlobInfo(digest, size)

    def start(self, repository: str) -> UploadStatus:
        upload_id = str(uuid.uuid4())
        now = time.time()
        with self.db.write() as conn:
            rid = repo_id(conn, repository, create=True)
            conn.execute(
                insert(uploads).values(
                    id=upload_id,
                    repo_id=rid,
                    state=UploadState.ACTIVE.value,
                    offset=0,
                    started_at=now,
                    updated_at=now,
                )
            )
        self._hashers[upload_id] = (hashlib.sha256(), 0)
        return UploadStatus(upload_id, repository, 0)

    def _session(self, repository: str, upload_id: str) -> None:
        with self.db.read() as conn:
            found = conn.execute(
                select(uploads.c.id)
                .select_from(uploads.join(repositories, repositories.c.id == uploads.c.repo_id))
                .where(uploads.c.id == upload_id, repositories.c.name == repository)
            ).scalar()
        if found is None:
            self._hashers.pop(upload_id, None)  # expired by a GC in another process
            raise DistributionError(Code.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id})

    async def _offset(self, upload_id: str) -> int:
        try:
            return (await self.storage.stat(upload_path(upload_id))).size
        except PathNotFoundError:
            return 0

    def _lock(self, upload_id: str) -> asyncio.Lock:
        return self._locks.setdefault(upload_id, asyncio.Lock())

    def _require(self, upload_id: str, required: UploadState) -> None:
        current = self._states.get(upload_id, UploadState.ACTIVE)
        if current is not required:
            raise DistributionError(
                Code.BLOB_UPLOAD_INVALID,
                f"upload {upload_id} is {current.value}; this needs it {required.value}",
                detail={"uuid": upload_id},
            )

    async def status(self, repository: str, upload_id: str) -> UploadStatus:
        self._session(repository, upload_id)
        return UploadStatus(upload_id, repository, await self._offset(upload_id))

    async def append(
        self,
        repository: str,
        upload_id: str,
        body: AsyncIterable[bytes],
        start: int | None,
        length: int | None,
    ) -> UploadStatus:
        """PATCH: append a chunk; ``start`` (from Content-Range) must be the current offset."""
        async with self._lock(upload_id):
            self._session(repository, upload_id)
            self._require(upload_id, UploadState.ACTIVE)
            offset = await self._offset(upload_id)
            if start is not None and start != offset:
                raise DistributionError(
                    Code.RANGE_INVALID,
                    f"chunk starts at {start} but the upload has {offset} bytes; "
                    "GET the upload status and continue from its Range",
                    status=416,
                    headers=_range_headers(repository, upload_id, offset),
                )
            await self._write_chunk(upload_id, offset, body, length)
            now_at = await self._offset(upload_id)
            self._touch(upload_id, now_at)
            return UploadStatus(upload_id, repository, now_at)

    async def _write_chunk(
        self, upload_id: str, offset: int, body: AsyncIterable[bytes], length: int | None
    ) -> int:
        hasher, covered = self._hashers.get(upload_id, (None, -1))
        if hasher is None or covered != offset:
            hasher = None
        hashing = _Hashing(body, hasher.copy() if hasher else _NullHash(), length)
        written = await self.storage.write(upload_path(upload_id), hashing, append=True)
        if length is not None and written != length:
            # The chunk is in storage (a resumed client continues after it) but the declared
            # length was a lie; say so without losing what did arrive.
            raise DistributionError(
                Code.SIZE_INVALID, f"declared {length} bytes, received {written}", status=400
            )
        if hasher is not None:
            self._hashers[upload_id] = (hashing.hasher, offset + written)
        else:
            self._hashers.pop(upload_id, None)
        return written

    def _touch(self, upload_id: str, offset: int) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(uploads)
                .where(uploads.c.id == upload_id)
                .values(updated_at=time.time(), offset=offset)
            )

    async def commit(
        self,
        repository: str,
        upload_id: str,
        digest: str,
        body: AsyncIterable[bytes],
        start: int | None,
        length: int | None,
    ) -> BlobInfo:
        """PUT ``?digest=``: take the last chunk (if any), verify the digest, publish the blob."""
        check_digest(digest)
        async with self._lock(upload_id):
            self._session(repository, upload_id)
            self._require(upload_id, UploadState.ACTIVE)
            offset = await self._offset(upload_id)
            if start is not None and start != offset:
                raise DistributionError(
                    Code.RANGE_INVALID,
                    f"chunk starts at {start} but the upload has {offset} bytes",
                    status=416,
                    headers=_range_headers(repository, upload_id, offset),
                )
            await self._write_chunk(upload_id, offset, body, length)
            self._states[upload_id] = UploadState.COMMITTING
            try:
                size = await self._offset(upload_id)
                actual = await self._digest_of(upload_id, size)
                if actual != digest:
                    await self._cancel(upload_id)
                    raise DistributionError(
                        Code.DIGEST_INVALID,
                        f"upload content is {actual}, not {digest}; the upload was cancelled",
                        detail={"expected": digest, "actual": actual},
                    )
                await self._publish(repository, digest, size, upload_path(upload_id), upload_id)
            finally:
                self._forget(upload_id)
        return BlobInfo(digest, size)

    async def _digest_of(self, upload_id: str, size: int) -> str:
        hasher, covered = self._hashers.get(upload_id, (None, -1))
        if hasher is not None and covered == size:
            return "sha256:" + str(hasher.hexdigest())
        fresh = hashlib.sha256()
        try:
            async for chunk in await self.storage.read(upload_path(upload_id)):
                fresh.update(chunk)
        except PathNotFoundError:
            pass
        return "sha256:" + fresh.hexdigest()

    async def cancel(self, repository: str, upload_id: str) -> None:
        async with self._lock(upload_id):
            self._session(repository, upload_id)
            await self._cancel(upload_id)
            self._forget(upload_id)

    async def _cancel(self, upload_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(uploads).where(uploads.c.id == upload_id))
        await self._discard(upload_path(upload_id))

    def _forget(self, upload_id: str) -> None:
        self._hashers.pop(upload_id, None)
        self._states.pop(upload_id, None)
        self._locks.pop(upload_id, None)

    async def _discard(self, path: str) -> None:
        with contextlib.suppress(PathNotFoundError):
            await self.storage.delete(path)

    @staticmethod
    def _verify(expected: str, actual: str, size: int, length: int | None) -> None:
        if length is not None and size != length:
            raise DistributionError(
                Code.SIZE_INVALID, f"declared {length} bytes, received {size}", status=400
            )
        if actual != expected:
            raise DistributionError(
                Code.DIGEST_INVALID,
                f"content is {actual}, not {expected}",
                detail={"expected": expected, "actual": actual},
            )


class _NullHash:
    """Stands in for a hasher when the running hash is unknown (re-hashed at commit)."""

    def update(self, _data: bytes) -> None:
        return None

    def copy(self) -> _NullHash:
        return self


def _range_headers(repository: str, upload_id: str, offset: int) -> dict[str, str]:
    return {
        "Location": f"/v2/{repository}/blobs/uploads/{upload_id}",
        "Range": f"0-{max(offset - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
    }


def _linked_size(conn: Connection, repository: str, digest: str) -> int | None:
    """Size of ``digest`` if ``repository`` links it (uploaded or mounted there), else None."""
    size = conn.execute(
        select(blobs.c.size)
        .select_from(
            blob_links.join(blobs, blobs.c.digest == blob_links.c.digest).join(
                repositories, repositories.c.id == blob_links.c.repo_id
            )
        )
        .where(repositories.c.name == repository, blob_links.c.digest == digest)
    ).scalar()
    return None if size is None else int(size)
