"""Multi-platform builds: one single-platform build per platform, then an OCI image index.

Each platform is an ordinary :func:`~ukedge.build.build_image` (its own kernel, runtime and app
layers, its own config and manifest), stored untagged; the index lists their manifests in the
order the platforms were given, each entry stating ``platform`` (``os``, ``architecture`` and,
for arm64, ``variant``), and it alone gets the tags. Every per-platform build is reproducible,
so the index is too: the same inputs and platform list give the same index digest.

Crash safety: the whole build holds the store's lease, so a concurrent ``gc`` never sweeps an
untagged platform manifest before the index that references it is written; a build that fails
(or is interrupted) part-way tags nothing, and the untagged manifests it left are swept by the
next ``gc``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ukedge.build._builder import BuildProgress, BuildResult, build_image
from ukedge.errors import UsageError
from ukedge.image import Descriptor, ImageIndex, ImageStore, Platform, mediatypes
from ukedge.types import ProgressCallback

__all__ = ["IndexResult", "build_index"]

_TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class IndexResult:
    """What :func:`build_index` stored: the index digest, its tags and each platform's build."""

    digest: str
    tags: list[str]
    index: ImageIndex
    builds: list[BuildResult] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.digest.split(":", 1)[1][:12]

    @property
    def size(self) -> int:
        """Compressed bytes of every platform (blobs they share counted once)."""
        sizes: dict[str, int] = {}
        for build in self.builds:
            sizes[build.manifest.config.digest] = build.manifest.config.size
            sizes.update({layer.digest: layer.size for layer in build.layers})
        return sum(sizes.values())


def build_index(
    context: Path,
    tags: Sequence[str] = (),
    *,
    store: ImageStore,
    platforms: Sequence[Platform],
    progress: Callable[[Platform], BuildProgress | None] | None = None,
    kernel_progress: Callable[[Platform], ProgressCallback | None] | None = None,
    cache: Path | None = None,
) -> IndexResult:
    """Build ``context/Ukfile`` for each of ``platforms`` and tag an index of them ``tags``
    (default ``<app.name>:latest``). ``progress(platform)`` gives each build its callback."""
    if len(platforms) < 2:
        raise UsageError("a multi-platform build needs two platforms or more")
    builds: list[BuildResult] = []
    with store.lease():
        for platform in platforms:
            builds.append(
                build_image(
                    context,
                    tags,
                    store=store,
                    progress=progress(platform) if progress else None,
                    kernel_progress=kernel_progress(platform) if kernel_progress else None,
                    cache=cache,
                    platform=platform,
                    tag=False,
                )
            )
        entries = [
            (
                Descriptor(
                    mediaType=mediatypes.OCI_MANIFEST,
                    digest=build.digest,
                    size=len(store.read_blob(build.digest)),
                ),
                build.config.platform,
            )
            for build in builds
        ]
        index = ImageIndex.of_platforms(entries, {_TITLE: builds[0].config.name})
        data = index.to_json()
        final = builds[0].tags
        desc = store.add_manifest(data, final[0], mediatypes.OCI_INDEX)
        for ref in final[1:]:
            store.add_manifest(data, ref, mediatypes.OCI_INDEX)
    return IndexResult(digest=desc.digest, tags=final, index=index, builds=builds)
