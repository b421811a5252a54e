"""Blob uploads to one registry: resume, cross-repository mount, one ``PUT``, or chunks.

A blob up to ``chunk_size`` goes up in one ``PUT``; a larger one as ``POST`` → ``PATCH`` chunks →
``PUT``, each chunk recorded in :class:`~ukedge.registry.UploadSessions` so that an interrupted
upload (a crash, a dropped connection, a cancelled push) resumes where the registry stopped
instead of starting over. Only one pusher at a time feeds a recorded session: the others wait on
its lock and then find the blob already there. The requests themselves (auth, retries, error
mapping) are the client's; this module holds the upload protocol only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from typing import IO, Protocol, TypeVar

import httpx

from ukedge.errors import AuthenticationError, NotFoundError, RegistryError
from ukedge.registry._errors import error_from_response, raise_if_cancelled
from ukedge.registry._progress import BlobOutcome, ByteProgress, ignore_bytes
from ukedge.registry._state import UploadSessions

__all__ = ["BlobUploader", "UploadWire"]

log = logging.getLogger(__name__)

_OCTET = "application/octet-stream"
_MAX_RANGE_RETRIES = 3
_T = TypeVar("_T")


class UploadWire(Protocol):
    """What an upload needs of :class:`~ukedge.registry.RegistryClient`: its requests (retried,
    errors mapped), absolute ``Location`` URLs, the blob check and the session records."""

    registry: str
    chunk_size: int
    uploads: UploadSessions

    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        ok: Collection[int],
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        retry: bool | None = None,
        retry_codes: Collection[str] = (),
    ) -> httpx.Response: ...

    def _with_retries(
        self, what: str, attempt: Callable[[], _T], codes: Collection[str] = ()
    ) -> _T: ...

    def _url(self, location: str) -> str: ...

    def blob_size(self, repository: str, digest: str) -> int | None: ...


def _range_offset(header: str | None, hint: int) -> int:
    """Bytes received, from an upload's ``Range: 0-<last byte>`` header.

    distribution answers ``0-0`` both for nothing and for one byte received; ``hint`` (what we
    last recorded) breaks the tie.
    """
    if not header:
        return 0
    text = header.strip().removeprefix("bytes=")
    start, sep, end = text.partition("-")
    try:
        last = int(end) if sep else -1
        first = int(start)
    except ValueError:
        return 0
    if first != 0 or last < 0:
        return 0
    if last == 0:
        return 1 if hint == 1 else 0
    return last + 1


class BlobUploader:
    """Uploads blobs through one client; the client's ``upload_blob``, ``mount_blob`` and
    ``upload_status`` hand their calls to it."""

    def __init__(self, wire: UploadWire) -> None:
        self._wire = wire

    def mount(self, repository: str, digest: str, source: str) -> tuple[bool, str | None]:
        """Ask the registry to link ``digest`` from ``source`` into ``repository``.

        Returns ``(True, None)`` when mounted, ``(False, location)`` when the registry opened an
        upload session instead (so the caller uploads there), ``(False, None)`` when refused.
        """
        what = f"mount blob {digest} from {source} into {repository}"
        try:
            response = self._wire._send(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                what=what,
                ok={201, 202},
                params={"mount": digest, "from": source},
            )
        except (AuthenticationError, NotFoundError) as exc:
            log.debug("%s refused: %s", what, exc)
            return False, None
        if response.status_code == 201:
            return True, None
        location = response.headers.get("Location")
        return False, self._wire._url(location) if location else None

    def status(self, location: str, *, hint: int = 0) -> tuple[str, int]:
        """Ask where an upload session stands: ``(location, bytes received)``."""
        response = self._wire._send("GET", location, what="query upload status", ok={204, 200})
        return self._wire._url(response.headers.get("Location") or location), _range_offset(
            response.headers.get("Range"), hint
        )

    def upload(
        self,
        repository: str,
        digest: str,
        size: int,
        open_source: Callable[[], IO[bytes]],
        *,
        mount_from: Sequence[str] = (),
        on_progress: ByteProgress = ignore_bytes,
        cancel: threading.Event | None = None,
    ) -> BlobOutcome:
        """Put a blob into ``repository``: resume, mount, one ``PUT``, or chunks, in that order.

        A transient failure is retried; a chunked upload then continues from the registry's
        offset (the same path as resuming after an interruption).
        """
        wire = self._wire
        is_cancelled = (lambda: cancel.is_set()) if cancel is not None else (lambda: False)
        # Chunked uploads keep a session on disk; one pusher at a time may feed it.
        lock = (
            wire.uploads.exclusive(wire.registry, repository, digest, is_cancelled)
            if size > wire.chunk_size
            else contextlib.nullcontext(False)
        )
        with lock as waited:
            if waited and wire.blob_size(repository, digest) is not None:
                on_progress(size)
                return BlobOutcome.EXISTS
            return wire._with_retries(
                f"push blob {digest} to {repository}",
                lambda: self._upload_once(
                    repository, digest, size, open_source, mount_from, on_progress, cancel
                ),
            )

    def _start(self, repository: str, digest: str) -> str:
        what = f"push blob {digest} to {repository}"
        response = self._wire._send("POST", f"/v2/{repository}/blobs/uploads/", what=what, ok={202})
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                f"{what}: {self._wire.registry} opened an upload without a Location header"
            )
        return self._wire._url(location)

    def _resume(self, repository: str, digest: str, size: int) -> tuple[str, int] | None:
        wire = self._wire
        record = wire.uploads.load(wire.registry, repository, digest)
        if record is None:
            return None
        try:
            location, offset = self.status(record.location, hint=record.offset)
        except RegistryError as exc:
            log.info(
                "cannot resume upload of %s to %s (%s); starting over", digest, repository, exc
            )
            wire.uploads.drop(wire.registry, repository, digest)
            return None
        if offset > size:
            wire.uploads.drop(wire.registry, repository, digest)
            return None
        log.info("resuming upload of %s to %s at byte %d of %d", digest, repository, offset, size)
        return location, offset

    def _upload_once(
        self,
        repository: str,
        digest: str,
        size: int,
        open_source: Callable[[], IO[bytes]],
        mount_from: Sequence[str],
        on_progress: ByteProgress,
        cancel: threading.Event | None,
    ) -> BlobOutcome:
        resumed = self._resume(repository, digest, size)
        location, offset = resumed if resumed else (None, 0)
        if location is None:
            for source in mount_from:
                if source == repository:
                    continue
                mounted, location = self.mount(repository, digest, source)
                if mounted:
                    on_progress(size)
                    return BlobOutcome.MOUNTED
                if location is not None:
                    break
        if location is None:
            location = self._start(repository, digest)
        with open_source() as source_file:
            if resumed is None and size <= self._wire.chunk_size:
                data = source_file.read(size + 1)
                self._finish(repository, digest, location, data)
                on_progress(size)
                return BlobOutcome.UPLOADED
            self._chunks(
                repository, digest, size, location, offset, source_file, on_progress, cancel
            )
        return BlobOutcome.RESUMED if resumed else BlobOutcome.UPLOADED

    def _finish(self, repository: str, digest: str, location: str, data: bytes) -> None:
        wire = self._wire
        what = f"push blob {digest} to {repository}"
        url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
        try:
            wire._send(
                "PUT", url, what=what, ok={201, 204}, content=data, headers={"Content-Type": _OCTET}
            )
        except RegistryError as exc:
            if exc.code in {"DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN"}:
                wire.uploads.drop(wire.registry, repository, digest)
            raise

    def _chunks(
        self,
        repository: str,
        digest: str,
        size: int,
        location: str,
        offset: int,
        source: IO[bytes],
        on_progress: ByteProgress,
        cancel: threading.Event | None,
    ) -> None:
        wire = self._wire
        what = f"push blob {digest} to {repository}"
        wire.uploads.save(wire.registry, repository, digest, location, offset)
        on_progress(offset)
        source.seek(offset)
        realigned = 0
        while offset < size:
            raise_if_cancelled(cancel, what)
            data = source.read(min(wire.chunk_size, size - offset))
            if not data:
                raise RegistryError(
                    f"{what}: the local blob is shorter than its declared {size} bytes"
                )
            response = wire._send(
                "PATCH",
                location,
                what=what,
                ok={202, 416},
                content=data,
                headers={
                    "Content-Type": _OCTET,
                    "Content-Range": f"{offset}-{offset + len(data) - 1}",
                },
            )
            if response.status_code == 416:
                # The registry holds a different number of bytes than we thought: ask, realign.
                realigned += 1
                if realigned > _MAX_RANGE_RETRIES:
                    raise error_from_response(response, what, wire.registry)
                location, offset = self.status(location, hint=offset)
                source.seek(offset)
                continue
            location = wire._url(response.headers.get("Location") or location)
            offset += len(data)
            wire.uploads.save(wire.registry, repository, digest, location, offset)
            on_progress(offset)
        self._finish(repository, digest, location, b"")
        wire.uploads.drop(wire.registry, repository, digest)
