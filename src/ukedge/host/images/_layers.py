"""Unpacked layers, ready to hand to the hypervisor.

Image layers travel compressed; a guest under TCG unpacks gzip about ten times slower than the
host does, so a host decompresses each kernel and initrd layer once, keyed by its digest, and
every instance of every image that shares the layer boots from the same unpacked file. The
directory is derived data: deleting it costs one unpack per layer, nothing more.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ukedge.errors import ImageError
from ukedge.image import Descriptor, ImageStore, digest_hex, mediatypes

__all__ = ["UnpackedLayers"]

_CHUNK = 1 << 20


class UnpackedLayers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def unpacked(self, store: ImageStore, layer: Descriptor) -> Path:
        """The uncompressed content of ``layer``, unpacking it on first use."""
        target = self.root / digest_hex(layer.digest)
        if target.exists():
            return target
        source = store.blob_path(layer.digest)
        if not source.exists():
            raise ImageError(f"layer {layer.digest} is missing from the store {store.root}")
        # A name of its own per unpack: two threads may boot the same new image at once.
        fd, name = tempfile.mkstemp(dir=self.root, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            self._unpack(layer.media_type, source, tmp)
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    @staticmethod
    def _unpack(media_type: str, source: Path, dest: Path) -> None:
        if media_type in (mediatypes.KERNEL_GZIP, mediatypes.INITRD_GZIP):
            try:
                with gzip.open(source, "rb") as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            except (OSError, EOFError) as exc:
                raise ImageError(f"layer {source.name}: corrupt gzip data ({exc})") from exc
        elif media_type == mediatypes.INITRD_ZSTD:
            result = subprocess.run(
                ["zstd", "-q", "-d", "-f", str(source), "-o", str(dest)],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise ImageError(f"layer {source.name}: zstd failed: {result.stderr.strip()}")
        elif media_type == mediatypes.KERNEL:
            shutil.copyfile(source, dest)
        else:
            raise ImageError(
                f"layer media type {media_type!r} is not a kernel or initrd this host can boot"
            )
