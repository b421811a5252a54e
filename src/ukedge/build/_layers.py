"""Layer files: deterministic gzip blobs made from a cpio archive or a kernel, and the cache of
the slow ones (kernel, runtime) keyed by a hash of their inputs.

A layer is produced in a scratch directory, never in the store; the builder adds it to the store
only once every layer of the image exists, so a failed build leaves the store untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ukedge.errors import BuildError
from ukedge.guest import CpioArchive, _cpio, gzip_file, source_date_epoch
from ukedge.image import digest_file

__all__ = ["LayerCache", "LayerFile", "gzip_layer", "initrd_layer", "layer_format_key"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerFile:
    """A compressed layer on disk, with what the manifest and the report need."""

    path: Path
    media_type: str
    digest: str
    size: int
    uncompressed_size: int
    #: RAM its files take in the guest's tmpfs root (``CpioArchive.rootfs_size``); 0 for the
    #: kernel, which is not unpacked there.
    rootfs_size: int = 0


def layer_format_key() -> str:
    """Changes whenever the bytes a layer is written as could change: the cpio writer, this
    module and ``SOURCE_DATE_EPOCH``."""
    h = hashlib.sha256()
    h.update(Path(_cpio.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(str(source_date_epoch()).encode())
    return h.hexdigest()


def initrd_layer(archive: CpioArchive, dest: Path, media_type: str) -> LayerFile:
    """Write ``archive`` as a gzip-compressed newc cpio at ``dest``."""
    raw = dest.with_name(dest.name + ".cpio")
    try:
        uncompressed = archive.write_to(raw)
        gzip_file(raw, dest)
    finally:
        raw.unlink(missing_ok=True)
    digest, size = digest_file(dest)
    return LayerFile(dest, media_type, digest, size, uncompressed, archive.rootfs_size())


def gzip_layer(source: Path, dest: Path, media_type: str) -> LayerFile:
    """A file (the kernel) compressed as one layer."""
    gzip_file(source, dest)
    digest, size = digest_file(dest)
    return LayerFile(dest, media_type, digest, size, source.stat().st_size)


class LayerCache:
    """``<root>/<kind>-<key>.gz`` plus a ``.json`` with its digest; both renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = f"{kind}-{key[:32]}"
        return self.root / f"{base}.gz", self.root / f"{base}.json"

    def get(self, kind: str, key: str) -> LayerFile | None:
        blob, meta = self._paths(kind, key)
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if (
            info.get("key") != key
            or "rootfs_size" not in info
            or not blob.is_file()
            or blob.stat().st_size != info["size"]
        ):
            return None
        return LayerFile(
            blob,
            info["media_type"],
            info["digest"],
            info["size"],
            info["uncompressed_size"],
            info["rootfs_size"],
        )

    def get_or_build(
        self, kind: str, key: str, build: Callable[[Path], LayerFile]
    ) -> tuple[LayerFile, bool]:
        """The cached layer, or ``build(dest)`` it into the cache; ``True`` when it was cached."""
        cached = self.get(kind, key)
        if cached is not None:
            return cached, True
        self.root.mkdir(parents=True, exist_ok=True)
        blob, meta = self._paths(kind, key)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=f".{kind}-") as tmp:
            made = build(Path(tmp) / "layer.gz")
            if made.path.parent != Path(tmp):
                raise BuildError(f"layer builder for {kind} wrote outside its scratch directory")
            made.path.replace(blob)
            record = asdict(made) | {"path": str(blob), "key": key}
            tmp_meta = Path(tmp) / "meta.json"
            tmp_meta.write_text(json.dumps(record, sort_keys=True))
            tmp_meta.replace(meta)
        log.debug("cached %s layer %s (%d bytes)", kind, made.digest, made.size)
        return LayerFile(
            blob,
            made.media_type,
            made.digest,
            made.size,
            made.uncompressed_size,
            made.rootfs_size,
        ), False
