"""OCI archives: a tar of an OCI image layout (what skopeo calls ``oci-archive:``), as
``ukedge save`` writes and ``ukedge load`` reads.

Crashes: an archive is written under a temporary name beside its destination and renamed into
place. Reading extracts into a staging directory the caller owns and verifies every blob's
digest there, before the store keeps any of them.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ukedge.errors import DigestMismatchError, ImageError
from ukedge.image._digest import digest_file, digest_hex
from ukedge.image._manifest import Descriptor, ImageIndex

__all__ = ["LAYOUT", "read_archive", "write_archive"]

#: The ``oci-layout`` file of every image layout, the store's and an archive's.
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def write_archive(dest: Path, index: ImageIndex, blobs: Mapping[str, Path]) -> None:
    """Write ``index`` and the blobs (digest -> file) as an OCI archive at ``dest``, atomically."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            _add_bytes(tar, "oci-layout", LAYOUT)
            _add_bytes(tar, "index.json", index.to_json())
            for digest in sorted(blobs):
                tar.add(blobs[digest], f"blobs/sha256/{digest_hex(digest)}")
        Path(tmp).replace(dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_archive(source: Path, staging: Path) -> tuple[list[Descriptor], list[Path]]:
    """Extract the archive into ``staging``; returns its tagged entries and its blob files,
    each blob's digest verified. Raises naming ``source`` when it is no OCI archive, holds no
    tagged image, or a blob is not what its name says."""
    try:
        tar = tarfile.open(source)  # noqa: SIM115 - closed by the with-block below
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(f"{source}: not a readable OCI archive ({exc})") from exc
    with tar:
        try:
            tar.extractall(staging, filter="data")
            index = ImageIndex.model_validate_json((staging / "index.json").read_bytes())
        except (OSError, tarfile.TarError, ValueError) as exc:
            raise ImageError(f"{source}: not an OCI archive: {exc}") from exc
    tagged = [d for d in index.manifests if d.ref_name]
    if not tagged:
        raise ImageError(f"{source}: the archive holds no tagged image")
    staged = staging / "blobs" / "sha256"
    paths = sorted(staged.iterdir()) if staged.is_dir() else []
    for path in paths:
        actual, _ = digest_file(path)
        if actual != "sha256:" + path.name:
            raise DigestMismatchError("sha256:" + path.name, actual, f"{source}: blob")
    return tagged, paths


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
