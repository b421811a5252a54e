"""What the client remembers between runs, per registry: open uploads and where blobs live.

Both live in a small directory (``<ukedge home>/registry`` by default) as JSON files written by
temp file + rename, so a crash leaves the old or the new record:

* ``uploads/<key>.json`` — the upload URL and offset of a chunked upload in progress, keyed by
  registry, repository and digest, so the next push asks the registry how far it got and goes on
  from there instead of starting over.
* ``locations.json`` — for each registry, the repositories each blob was last pushed to or
  pulled from, so a push to another repository of the same registry can mount it instead of
  uploading it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ukedge.errors import RegistryError

__all__ = ["BlobLocations", "UploadRecord", "UploadSessions"]

_MAX_REPOS_PER_BLOB = 8
_MAX_BLOBS_PER_REGISTRY = 20000
_LOCK_POLL_S = 0.05


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(data, sort_keys=True).encode())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class UploadRecord:
    """An upload session the registry holds for us: where to continue, and from which offset."""

    location: str
    offset: int
    updated: float


class UploadSessions:
    def __init__(self, root: Path) -> None:
        self.root = root / "uploads"

    def _path(self, registry: str, repository: str, digest: str) -> Path:
        key = hashlib.sha256(f"{registry}/{repository}@{digest}".encode()).hexdigest()[:32]
        return self.root / f"{key}.json"

    def load(self, registry: str, repository: str, digest: str) -> UploadRecord | None:
        data = _read_json(self._path(registry, repository, digest))
        if not isinstance(data, dict):
            return None
        try:
            return UploadRecord(str(data["location"]), int(data["offset"]), float(data["updated"]))
        except (KeyError, TypeError, ValueError):
            return None

    def save(self, registry: str, repository: str, digest: str, location: str, offset: int) -> None:
        record = {
            "registry": registry,
            "repository": repository,
            "digest": digest,
            "location": location,
            "offset": offset,
            "updated": time.time(),
        }
        _write_json(self._path(registry, repository, digest), record)

    def drop(self, registry: str, repository: str, digest: str) -> None:
        self._path(registry, repository, digest).unlink(missing_ok=True)

    @contextlib.contextmanager
    def exclusive(
        self,
        registry: str,
        repository: str,
        digest: str,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[bool]:
        """Hold the right to upload this blob to this repository; yields whether we waited.

        Two pushes (threads or processes) sharing this directory must not feed one upload
        session; the second waits (polling, so that ``cancelled`` can end the wait), and then
        usually finds the blob already there.
        """
        path = self._path(registry, repository, digest).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as lock:
            waited = False
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = True
                    if cancelled():
                        raise RegistryError(
                            f"push blob {digest} to {repository}: cancelled while another "
                            "push was uploading it"
                        ) from None
                    time.sleep(_LOCK_POLL_S)
            try:
                yield waited
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class BlobLocations:
    def __init__(self, root: Path) -> None:
        self.path = root / "locations.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / ".locations.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = _read_json(self.path)
                data = data if isinstance(data, dict) else {}
                yield data
                _write_json(self.path, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record(self, registry: str, repository: str, digests: list[str]) -> None:
        """Remember that ``registry`` holds each of ``digests`` in ``repository``."""
        with self._locked() as data:
            blobs = data.setdefault(registry, {})
            for digest in digests:
                repos = [r for r in blobs.pop(digest, []) if r != repository]
                blobs[digest] = [*repos, repository][-_MAX_REPOS_PER_BLOB:]
            while len(blobs) > _MAX_BLOBS_PER_REGISTRY:
                blobs.pop(next(iter(blobs)))

    def repositories(self, registry: str, digest: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recent first."""
        data = _read_json(self.path)
        if not isinstance(data, dict):
            return []
        repos = data.get(registry, {}).get(digest, [])
        return [str(r) for r in reversed(repos)] if isinstance(repos, list) else []
