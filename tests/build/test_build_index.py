"""Multi-platform builds with the real kernels (x86_64 and the cross-built arm64): one manifest
per platform, each the same as that platform's single build, under a reproducible index."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.build import IndexResult, build_image, build_index
from ukedge.errors import UsageError
from ukedge.image import ImageIndex, ImageStore, mediatypes, parse_platform, parse_platforms

pytestmark = pytest.mark.foreign_arch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BOTH = parse_platforms("linux/amd64,linux/arm64")


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, IndexResult]:
    store = ImageStore(tmp_path_factory.mktemp("multi") / "store")
    return store, build_index(EXAMPLES / "hello-c", ["hello-c:multi"], store=store, platforms=BOTH)


def test_index_lists_one_manifest_per_platform(multi: tuple[ImageStore, IndexResult]) -> None:
    store, result = multi
    image = store.resolve("hello-c:multi")
    assert image.is_index and image.digest == result.digest
    assert image.descriptor.media_type == mediatypes.OCI_INDEX
    index = ImageIndex.model_validate_json(store.read_blob(result.digest))
    assert [str(p) for p in index.platforms] == ["linux/amd64", "linux/arm64/v8"]
    for entry, build, arch in zip(index.manifests, result.builds, ("amd64", "arm64"), strict=True):
        assert entry.digest == build.digest
        assert entry.artifact_type == mediatypes.ARTIFACT_TYPE
        assert entry.size == len(store.read_blob(entry.digest))
        _, manifest = store.manifest("hello-c:multi", parse_platform(f"linux/{arch}"))
        assert store.config(manifest).architecture == arch
    # The platforms share nothing: their kernels, inits and apps are each their own machine's.
    amd, arm = ({layer.digest for layer in b.layers} for b in result.builds)
    assert not amd & arm
    # Only the index is tagged; its platform manifests are reachable through it.
    assert [i.ref for i in store.images()] == ["hello-c:multi"]
    assert store.gc() == []


def test_index_and_each_platform_are_reproducible(
    multi: tuple[ImageStore, IndexResult], tmp_path: Path
) -> None:
    _, first = multi
    other = ImageStore(tmp_path / "other")
    again = build_index(EXAMPLES / "hello-c", ["hello-c:multi"], store=other, platforms=BOTH)
    assert again.digest == first.digest
    for platform, build in zip(BOTH, first.builds, strict=True):
        single = build_image(
            EXAMPLES / "hello-c",
            ["hello-c:one"],
            store=ImageStore(tmp_path / str(platform.architecture)),
            platform=platform,
        )
        assert single.digest == build.digest


def test_one_platform_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="two platforms"):
        build_index(
            EXAMPLES / "hello-c",
            store=ImageStore(tmp_path / "s"),
            platforms=[parse_platform("linux/arm64")],
        )
