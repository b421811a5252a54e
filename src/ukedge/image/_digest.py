"""Content digests: the names of everything in the store and on the wire."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from ukedge.errors import UsageError

__all__ = ["DIGEST_PATTERN", "digest_bytes", "digest_file", "digest_hex", "validate_digest"]

#: sha256 only: it is the algorithm every registry supports and the one ukedge writes.
DIGEST_PATTERN = re.compile(r"^sha256:[a-f0-9]{64}\Z")
_CHUNK = 1 << 20


def validate_digest(digest: str) -> str:
    if not DIGEST_PATTERN.match(digest):
        raise UsageError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    return digest


def digest_hex(digest: str) -> str:
    """The hex part of a digest, used as a file name; validates so it is safe in a path."""
    return validate_digest(digest).split(":", 1)[1]


def digest_bytes(data: bytes | Iterable[bytes]) -> str:
    h = hashlib.sha256()
    if isinstance(data, bytes | bytearray | memoryview):
        h.update(data)
    else:
        for chunk in data:
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def digest_file(path: Path) -> tuple[str, int]:
    """Digest and size of a file, read in chunks so large blobs never sit in memory whole."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size
