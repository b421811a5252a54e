"""Garbage collection of the store's blobs: what the tags reach, and the sweep of the rest.

Blobs are shared by every image that names them, so a blob goes only when no tag reaches it,
through an index and its manifests to their configs and layers. The store runs these under its
exclusive GC lock, which writers hold shared while they add blobs and then the manifest naming
them: a sweep never takes a blob a concurrent build or pull is about to reference. Two sweeps of
two processes may race for one file; the loser skips it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from ukedge.image._manifest import Descriptor
from ukedge.image._mediatypes import DOCKER_MANIFEST, INDEX_TYPES, OCI_MANIFEST

__all__ = ["MANIFEST_TYPES", "children", "disk_usage", "reachable", "sweep"]

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})


def children(data: bytes, media_type: str) -> list[Descriptor]:
    """What a manifest (its config and layers) or an index (its manifests) references."""
    doc = json.loads(data)
    if media_type in INDEX_TYPES:
        return [Descriptor.model_validate(m) for m in doc.get("manifests", [])]
    kids = [Descriptor.model_validate(doc["config"])]
    kids += [Descriptor.model_validate(layer) for layer in doc.get("layers", [])]
    return kids


def reachable(
    roots: Iterable[Descriptor],
    read_blob: Callable[[str], bytes],
    has_blob: Callable[[str], bool],
) -> set[str]:
    """Every digest ``roots`` reach, through the manifests and indexes held here."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        desc = todo.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        if desc.media_type in MANIFEST_TYPES | INDEX_TYPES and has_blob(desc.digest):
            todo.extend(children(read_blob(desc.digest), desc.media_type))
    return seen


def sweep(blobs_dir: Path, keep: set[str]) -> dict[str, int]:
    """Delete every blob of ``blobs_dir`` not in ``keep``, and every temporary file; returns
    the removed blobs' digests and sizes."""
    removed: dict[str, int] = {}
    for path in blobs_dir.iterdir():
        if path.name.startswith("."):
            path.unlink(missing_ok=True)  # a temp file left by a crashed writer
            continue
        digest = "sha256:" + path.name
        if digest not in keep:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue  # another process's sweep got there first
            removed[digest] = size
    return removed


def disk_usage(blobs_dir: Path) -> int:
    """Bytes of the blobs on disk: each blob once, however many images share it."""
    total = 0
    for path in blobs_dir.iterdir():
        if path.name.startswith("."):
            continue  # a blob being written is not the store's yet
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total
