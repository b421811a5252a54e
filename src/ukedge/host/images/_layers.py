"""Unpacked layers, ready to hand to the hypervisor.

Image layers travel compressed; a guest under TCG unpacks gzip about ten times slower than the
host does, so a host decompresses each kernel and initrd layer once, keyed by its digest, and
every instance of every image that shares the layer boots from the same unpacked file. The
directory is derived data: deleting it costs one unpack per layer, nothing more.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ukedge.errors import ImageError, UsageError
from ukedge.guest import LAUNCH_PATH, SEED_PATH
from ukedge.image import Descriptor, ImageStore, digest_hex, mediatypes

__all__ = ["SHARED_RUNTIME_ENV", "RuntimeDisk", "UnpackedLayers", "shared_runtime_from_env"]

_CHUNK = 1 << 20
#: The node's runtime boot path: ``pmem`` (an erofs image on virtio-pmem, mounted with DAX),
#: ``blk`` (the same image on virtio-blk) or ``off``/unset (unpacked from the initramfs).
SHARED_RUNTIME_ENV = "UKEDGE_SHARED_RUNTIME"


def shared_runtime_from_env(environ: dict[str, str] | None = None) -> str | None:
    """The disk bus ``UKEDGE_SHARED_RUNTIME`` asks for (``pmem``, ``blk``), or None: off."""
    value = (os.environ if environ is None else environ).get(SHARED_RUNTIME_ENV, "").strip()
    if value in ("", "off", "0"):
        return None
    if value not in ("pmem", "blk"):
        raise UsageError(f"{SHARED_RUNTIME_ENV} must be pmem, blk or off, got {value!r}")
    return value


@dataclass(frozen=True)
class RuntimeDisk:
    """A runtime layer served from a read-only image instead of unpacked into guest RAM."""

    #: The image the guest mounts (virtio-pmem or virtio-blk).
    image: Path
    #: What stays in the initramfs: the init, its skeleton, the empty mount points.
    boot: Path
    #: Directories the guest binds from the image (``ukedge.ro=`` on its command line).
    mounts: tuple[str, ...]


class UnpackedLayers:
    def __init__(self, root: Path, *, shared_runtime: bool = False) -> None:
        self.root = root
        #: Serve runtime layers from an erofs image (:meth:`runtime_disk`) instead of the
        #: initramfs.
        self.shared_runtime = shared_runtime
        self.root.mkdir(parents=True, exist_ok=True)

    def forget(self, digest: str) -> None:
        """Delete what was derived from the blob ``digest``: its unpacked copy and, for a
        runtime layer, its image, boot archives and mount points (a machine that maps the
        image keeps it until it ends)."""
        hex_ = digest_hex(digest)
        (self.root / hex_).unlink(missing_ok=True)
        for derived in self.root.glob(f"{hex_}.*"):
            derived.unlink(missing_ok=True)

    def runtime_disk(
        self, store: ImageStore, runtime: Descriptor, others: Sequence[Descriptor]
    ) -> RuntimeDisk | None:
        """``runtime`` as an erofs image and a boot archive, made on first use; None when the
        layer has nothing worth an image (a static runtime: only the init and its skeleton).
        ``others`` are the image's other initrd layers: a directory they add to stays in RAM."""
        from ukedge.build import read_cpio, runtime_boot_archive, runtime_erofs, runtime_mounts

        hex_ = digest_hex(runtime.digest)
        key = hashlib.sha256("\n".join(o.digest for o in others).encode()).hexdigest()[:16]
        image = self.root / f"{hex_}.erofs"
        boot = self.root / f"{hex_}.{key}.boot"
        mounts_file = self.root / f"{hex_}.{key}.mounts"
        if mounts_file.exists():
            mounts = tuple(mounts_file.read_text().split())
            if not mounts:
                return None
            if image.exists() and boot.exists():
                return RuntimeDisk(image, boot, mounts)
        members = read_cpio(self.unpacked(store, runtime))
        names = [LAUNCH_PATH, SEED_PATH]
        for layer in others:
            names += [m.path for m in read_cpio(self.unpacked(store, layer))]
        mounts = runtime_mounts(members, names)
        if mounts:
            if not image.exists():
                self._write(image, lambda tmp: runtime_erofs(members, tmp))
            self._write(boot, lambda tmp: runtime_boot_archive(members, mounts, tmp))
        self._write(mounts_file, lambda tmp: tmp.write_text("\n".join(mounts) + "\n"))
        return RuntimeDisk(image, boot, mounts) if mounts else None

    def _write(self, target: Path, make: Callable[[Path], object]) -> None:
        """``make`` the file at a temporary name, then rename it to ``target``."""
        # A name of its own per writer: two threads may boot the same new image at once.
        fd, name = tempfile.mkstemp(dir=self.root, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            make(tmp)
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def unpacked(self, store: ImageStore, layer: Descriptor) -> Path:
        """The uncompressed content of ``layer``, unpacking it on first use."""
        target = self.root / digest_hex(layer.digest)
        if target.exists():
            return target
        source = store.blob_path(layer.digest)
        if not source.exists():
            raise ImageError(f"layer {layer.digest} is missing from the store {store.root}")
        self._write(target, lambda tmp: self._unpack(layer.media_type, source, tmp))
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
