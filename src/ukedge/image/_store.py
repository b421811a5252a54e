"""The local image store: an OCI image layout directory.

``<root>/oci-layout``, ``<root>/index.json`` and ``<root>/blobs/sha256/<hex>``, exactly as the OCI
image-layout spec lays them out, so skopeo (``oci:<root>:<name:tag>``), oras and umoci read it.
Each tag is one entry of ``index.json`` whose ``org.opencontainers.image.ref.name`` annotation is
the full reference (``sensor-agg:1``, ``localhost:5000/team/app:v2``).

A tag may name a multi-platform image: an OCI image index whose entries are one manifest per
platform. The store keeps the index as the registry served it (its digest is what a deployment
pins) but may hold only some of its manifests: a node pulls its own platform alone. Running or
inspecting such a tag picks one platform's manifest (the host's unless one is asked for); a
platform whose manifest is not here is an error that says how to pull it. A platform's manifest
is found by its digest as well, so an instance records the manifest it booted.

Crash safety: every file is written under a temporary name in the same directory and renamed
into place, so a reader sees the old or the new content, never half of one. Blobs are shared by
every image that names them; an unreferenced blob is removed by :meth:`ImageStore.gc`, which runs
after ``remove``. Writers hold a shared lease while they add blobs and then the manifest that
references them; ``gc`` takes the lease exclusively, so it never sweeps a blob a concurrent build
or pull is about to reference.

Apart from the index and tags kept here: blob files and their writer (:mod:`._blobs`), what the
tags reach and the sweep (:mod:`._gc`), and OCI archives for ``save``/``load``
(:mod:`._archive`).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ukedge.errors import DigestMismatchError, ImageError, UsageError
from ukedge.image import _gc
from ukedge.image._archive import LAYOUT, read_archive, write_archive
from ukedge.image._blobs import BlobWriter, write_atomic
from ukedge.image._config import ImageConfig
from ukedge.image._digest import digest_bytes, digest_file, digest_hex
from ukedge.image._gc import MANIFEST_TYPES
from ukedge.image._manifest import REF_NAME, Descriptor, ImageIndex, ImageManifest
from ukedge.image._mediatypes import CONFIG, INDEX_TYPES, OCI_MANIFEST
from ukedge.image._platform import Platform, host_platform
from ukedge.image._reference import parse_reference

__all__ = ["BlobWriter", "ImageStore", "StoredImage"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredImage:
    """One tag in the store and the manifest it points at."""

    ref: str
    descriptor: Descriptor

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def id(self) -> str:
        """Docker-style short image id: the first 12 hex digits of the manifest digest."""
        return digest_hex(self.descriptor.digest)[:12]

    @property
    def is_index(self) -> bool:
        """A multi-platform image (an OCI index, or Docker's manifest list)."""
        return self.descriptor.media_type in INDEX_TYPES


class ImageStore:
    """An OCI image layout directory holding local images."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            write_atomic(layout, LAYOUT)
        if not self._index_path.exists():
            write_atomic(self._index_path, ImageIndex().to_json())

    # -- locking -------------------------------------------------------------------------------

    @property
    def _index_path(self) -> Path:
        return self.root / "index.json"

    @contextlib.contextmanager
    def _flock(self, name: str, mode: int) -> Iterator[None]:
        with (self.root / name).open("a") as f:
            fcntl.flock(f, mode)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Hold while adding blobs and the manifest that names them; keeps ``gc`` away."""
        with self._flock(".gc.lock", fcntl.LOCK_SH):
            yield

    # -- blobs ---------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_writer(self, expected: str | None = None) -> BlobWriter:
        return BlobWriter(self, expected)

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = digest_bytes(data)
        path = self.blob_path(digest)
        if not path.exists():
            write_atomic(path, data)
        return Descriptor(mediaType=media_type, digest=digest, size=len(data))

    def put_file(self, source: Path, media_type: str) -> Descriptor:
        """Copy a file in as a blob (hashing while copying)."""
        with self.blob_writer() as w, source.open("rb") as f:
            while chunk := f.read(_CHUNK):
                w.write(chunk)
            digest = w.commit()
        return Descriptor(mediaType=media_type, digest=digest, size=w.size)

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is not in the store {self.root}") from None

    def open_blob(self, digest: str) -> IO[bytes]:
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is not in the store {self.root}") from None

    def verify_blob(self, digest: str) -> None:
        actual, _ = digest_file(self.blob_path(digest))
        if actual != digest:
            raise DigestMismatchError(digest, actual, "stored blob")

    # -- index ---------------------------------------------------------------------------------

    def _read_index(self) -> ImageIndex:
        return ImageIndex.model_validate_json(self._index_path.read_bytes())

    @contextlib.contextmanager
    def _index_transaction(self) -> Iterator[ImageIndex]:
        with self._flock(".index.lock", fcntl.LOCK_EX):
            index = self._read_index()
            yield index
            index.manifests.sort(key=lambda d: (d.ref_name or "", d.digest))
            write_atomic(self._index_path, index.to_json())

    def images(self) -> list[StoredImage]:
        """Every tagged image, sorted by reference."""
        return sorted(
            (StoredImage(d.ref_name, d) for d in self._read_index().manifests if d.ref_name),
            key=lambda i: i.ref,
        )

    def add_manifest(
        self,
        manifest: bytes,
        ref: str | None,
        media_type: str = OCI_MANIFEST,
        *,
        partial: bool = False,
    ) -> Descriptor:
        """Store a manifest whose blobs are all present and, if ``ref`` is given, tag it.

        ``partial``: ``manifest`` is an index of which only some platforms' manifests are
        here (a pull of one platform); each one that is here must be whole.
        """
        if media_type not in MANIFEST_TYPES | INDEX_TYPES:
            raise ImageError(f"unsupported manifest media type {media_type!r}")
        children = _gc.children(manifest, media_type)
        if media_type in INDEX_TYPES:
            if not children:
                raise ImageError("the index lists no manifest")
            if partial:
                children = [c for c in children if self.has_blob(c.digest)]
                if not children:
                    raise ImageError("none of the index's manifests is in the store; add one first")
        for child in children:
            if not self.has_blob(child.digest):
                raise ImageError(
                    f"manifest references {child.digest} ({child.media_type}) which is not in "
                    "the store; add the blobs before the manifest"
                )
            if media_type in INDEX_TYPES and child.media_type in MANIFEST_TYPES:
                self._check_whole(child)
        desc = self.put_bytes(manifest, media_type)
        if ref is not None:
            self._set_tag(self._normalise(ref), desc)
        return desc

    def _check_whole(self, desc: Descriptor) -> None:
        for blob in _gc.children(self.read_blob(desc.digest), desc.media_type):
            if not self.has_blob(blob.digest):
                raise ImageError(
                    f"the index's {desc.platform or ''} manifest {desc.digest} references "
                    f"{blob.digest} ({blob.media_type}) which is not in the store; add the "
                    "blobs before the manifests"
                )

    def _set_tag(self, ref: str, desc: Descriptor) -> None:
        entry = desc.model_copy(update={"annotations": {REF_NAME: ref}})
        art = self._artifact_type(desc)
        if art:
            entry = entry.model_copy(update={"artifact_type": art})
        with self._index_transaction() as index:
            index.manifests = [d for d in index.manifests if d.ref_name != ref]
            index.manifests.append(entry)

    def _artifact_type(self, desc: Descriptor) -> str | None:
        if desc.media_type != OCI_MANIFEST:
            return None
        return ImageManifest.model_validate_json(self.read_blob(desc.digest)).artifact_type

    @staticmethod
    def _normalise(ref: str) -> str:
        return str(parse_reference(ref))

    def resolve(self, ref: str) -> StoredImage:
        """Find an image by reference, by full digest, or by a unique image-id prefix."""
        images = self.images()
        if ref.startswith("sha256:") or (
            len(ref) >= 4 and all(c in "0123456789abcdef" for c in ref)
        ):
            hexpart = ref.removeprefix("sha256:")
            hits = {i.digest: i for i in images if digest_hex(i.digest).startswith(hexpart)}
            if not hits:
                hits = {
                    i.digest: i
                    for i in self._platform_images(images)
                    if digest_hex(i.digest).startswith(hexpart)
                }
            if len(hits) == 1:
                return next(iter(hits.values()))
            if len(hits) > 1:
                raise UsageError(f"image id {ref!r} is ambiguous: it matches {len(hits)} images")
        wanted = self._normalise(ref)
        for image in images:
            if image.ref == wanted:
                return image
        raise ImageError(f"no such image: {ref} (see `ukedge images`)")

    def _platform_images(self, images: Iterable[StoredImage]) -> Iterator[StoredImage]:
        """The manifests held here of every tagged index, each under its index's tag."""
        for image in images:
            if image.is_index:
                for child, present in self.entries(image):
                    if present:
                        yield StoredImage(image.ref, child)

    def entries(self, image: StoredImage) -> list[tuple[Descriptor, bool]]:
        """The entries of an index (each carries its ``platform``), and whether each one's
        manifest is in the store; ``[]`` for a single-platform image."""
        if not image.is_index:
            return []
        index = ImageIndex.model_validate_json(self.read_blob(image.digest))
        return [(child, self.has_blob(child.digest)) for child in index.manifests]

    def platform_image(self, image: StoredImage, platform: Platform | None = None) -> StoredImage:
        """The manifest of ``platform`` (default: the host's) of an index, under the index's
        tag; a single-platform image as it is (whether it fits is its config's to say)."""
        if not image.is_index:
            return image
        wanted = platform or host_platform()
        entries = self.entries(image)
        offered = ", ".join(str(c.platform) for c, _ in entries if c.platform) or "none"
        for child, present in entries:
            if child.platform is None or not child.platform.matches(wanted):
                continue
            if not present:
                held = ", ".join(str(c.platform) for c, here in entries if here and c.platform)
                raise ImageError(
                    f"{image.ref}: its {wanted} manifest is not in the store (it holds "
                    f"{held or 'none'}); pull it with `ukedge pull --platform {wanted} {image.ref}`"
                )
            return StoredImage(image.ref, child)
        raise ImageError(f"{image.ref} has no {wanted} manifest (its platforms: {offered})")

    def manifest(
        self, ref: str, platform: Platform | None = None
    ) -> tuple[StoredImage, ImageManifest]:
        """The image ``ref`` names and its manifest; for a multi-platform image, those of
        ``platform`` (default: the host's)."""
        image = self.platform_image(self.resolve(ref), platform)
        if image.descriptor.media_type not in MANIFEST_TYPES:
            raise ImageError(
                f"{ref}: {image.digest} is a {image.descriptor.media_type}, not an image manifest"
            )
        return image, ImageManifest.model_validate_json(self.read_blob(image.digest))

    def config(self, manifest: ImageManifest) -> ImageConfig:
        if manifest.config.media_type != CONFIG:
            raise ImageError(
                f"config media type {manifest.config.media_type!r} is not a ukedge image config "
                f"({CONFIG})"
            )
        return ImageConfig.from_json(self.read_blob(manifest.config.digest))

    def tag(self, source: str, target: str) -> StoredImage:
        image = self.resolve(source)
        self._set_tag(self._normalise(target), image.descriptor)
        return self.resolve(target)

    def remove(self, ref: str) -> list[str]:
        """Untag ``ref``; then sweep what no image references. Returns the removed blob digests."""
        image = self.resolve(ref)
        with self._index_transaction() as index:
            index.manifests = [d for d in index.manifests if d.ref_name != image.ref]
        return self.gc()

    def untag(self, refs: Iterable[str]) -> list[str]:
        """Remove several tags in one index write, sweeping nothing; returns the tags removed.

        For callers that drop many images at once (a cache eviction, a prune) and then run one
        :meth:`collect` instead of one sweep per tag.
        """
        wanted = {self._normalise(ref) for ref in refs}
        with self._index_transaction() as index:
            gone = sorted(d.ref_name for d in index.manifests if d.ref_name in wanted)
            index.manifests = [d for d in index.manifests if d.ref_name not in wanted]
        return [ref for ref in gone if ref]

    def image_size(self, manifest: ImageManifest) -> int:
        return manifest.config.size + sum(layer.size for layer in manifest.layers)

    def stored_size(self, image: StoredImage) -> int:
        """Compressed bytes of what the store holds of ``image``: for an index, its own bytes
        and each platform's that is here (blobs they share counted once)."""
        if not image.is_index:
            manifest = ImageManifest.model_validate_json(self.read_blob(image.digest))
            return self.image_size(manifest)
        sizes = {image.digest: image.descriptor.size}
        for child, present in self.entries(image):
            if present and child.media_type in MANIFEST_TYPES:
                sizes[child.digest] = child.size
                manifest = ImageManifest.model_validate_json(self.read_blob(child.digest))
                for blob in [manifest.config, *manifest.layers]:
                    sizes[blob.digest] = blob.size
        return sum(sizes.values())

    # -- garbage collection ----------------------------------------------------------------------

    def _reachable(self) -> set[str]:
        return _gc.reachable(self._read_index().manifests, self.read_blob, self.has_blob)

    def gc(self) -> list[str]:
        """Delete every blob no tagged image reaches. Safe against concurrent writers."""
        return sorted(self.collect())

    def collect(self) -> dict[str, int]:
        """:meth:`gc`, also saying how many bytes each removed blob held (what was reclaimed)."""
        with self._flock(".gc.lock", fcntl.LOCK_EX):
            return _gc.sweep(self.blobs_dir, self._reachable())

    def disk_usage(self) -> int:
        """Bytes of the blobs on disk: each blob once, however many images share it."""
        return _gc.disk_usage(self.blobs_dir)

    # -- archives ------------------------------------------------------------------------------

    def save(self, refs: list[str], dest: Path) -> None:
        """Write the images as an OCI archive (a tar of an image layout), atomically."""
        images = [self.resolve(r) for r in refs]
        blobs: set[str] = set()
        todo = [i.descriptor for i in images]
        while todo:
            desc = todo.pop()
            if desc.digest in blobs:
                continue
            blobs.add(desc.digest)
            if desc.media_type in INDEX_TYPES:
                # A node's index may hold only its own platform: the archive holds the same.
                kids = _gc.children(self.read_blob(desc.digest), desc.media_type)
                todo.extend(kid for kid in kids if self.has_blob(kid.digest))
            elif desc.media_type in MANIFEST_TYPES:
                todo.extend(_gc.children(self.read_blob(desc.digest), desc.media_type))
        index = ImageIndex(
            manifests=[
                i.descriptor.model_copy(update={"annotations": {REF_NAME: i.ref}}) for i in images
            ]
        )
        write_archive(dest, index, {digest: self.blob_path(digest) for digest in blobs})

    def load(self, source: Path) -> list[str]:
        """Import every tagged image of an OCI archive; verifies each blob before any is kept."""
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".load-") as tmp:
            tagged, paths = read_archive(source, Path(tmp))
            with self.lease():
                for path in paths:
                    target = self.blobs_dir / path.name
                    if not target.exists():
                        shutil.move(path, target)
                refs = [self._normalise(d.ref_name or "") for d in tagged]
                for desc, ref in zip(tagged, refs, strict=True):
                    self.add_manifest(
                        self.read_blob(desc.digest),
                        ref,
                        desc.media_type,
                        partial=desc.media_type in INDEX_TYPES,
                    )
        return refs
