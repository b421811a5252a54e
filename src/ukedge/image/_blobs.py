"""Blob files of the store: the atomic write every file of the layout goes through, and the
streaming writer of pulls and builds.

Crashes: a file is written under a temporary name in its own directory, fsynced, and renamed
into place, so a reader sees the old or the new content, never half of one; a temporary file a
crashed writer left (a name starting with ``.``) is swept by the store's garbage collection.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from ukedge.errors import DigestMismatchError
from ukedge.image._digest import validate_digest

__all__ = ["BlobDir", "BlobWriter", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BlobDir(Protocol):
    """Where a :class:`BlobWriter` writes: the store's blob directory and its naming."""

    @property
    def blobs_dir(self) -> Path: ...

    def blob_path(self, digest: str) -> Path: ...


class BlobWriter:
    """Streams one blob into the store, hashing as it goes; :meth:`commit` verifies and renames.

    Used by pulls and builds alike, so that no blob is ever held in memory whole and a wrong
    digest leaves nothing behind.
    """

    def __init__(self, store: BlobDir, expected: str | None = None) -> None:
        self._store = store
        self._expected = validate_digest(expected) if expected else None
        fd, name = tempfile.mkstemp(dir=store.blobs_dir, prefix=".upload-", suffix=".tmp")
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        """Verify, fsync and rename into place; returns the digest."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        actual = "sha256:" + self._hash.hexdigest()
        if self._expected and actual != self._expected:
            self._tmp.unlink(missing_ok=True)
            raise DigestMismatchError(self._expected, actual)
        self._tmp.replace(self._store.blob_path(actual))
        return actual

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None or not self._file.closed:
            self.abort()
