"""Multi-platform images in the local store: an index tag, its platforms, partial indexes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.errors import ImageError
from ukedge.image import (
    Descriptor,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    ImageStore,
    KernelInfo,
    mediatypes,
    parse_platform,
)

AMD64 = parse_platform("linux/amd64")
ARM64 = parse_platform("linux/arm64")


def _platform_manifest(store: ImageStore, arch: str, app: bytes) -> Descriptor:
    """A platform's manifest with its blobs, untagged (as a multi-platform build writes it)."""
    config = ImageConfig(
        name="app",
        runtime="static",
        entrypoint=["/app/x"],
        architecture=arch,  # type: ignore[arg-type]
        kernel=KernelInfo(profile="minimal", version="6.1"),
    )
    with store.lease():
        manifest = ImageManifest(
            artifactType=mediatypes.ARTIFACT_TYPE,
            config=store.put_bytes(config.to_json(), mediatypes.CONFIG),
            layers=[
                store.put_bytes(b"kernel-" + arch.encode(), mediatypes.KERNEL_GZIP),
                store.put_bytes(app, mediatypes.INITRD_GZIP),
            ],
        )
        return store.put_bytes(manifest.to_json(), mediatypes.OCI_MANIFEST)


def _index(store: ImageStore, ref: str) -> tuple[Descriptor, Descriptor, Descriptor]:
    amd = _platform_manifest(store, "amd64", b"app-amd64")
    arm = _platform_manifest(store, "arm64", b"app-arm64")
    index = ImageIndex.of_platforms([(amd, AMD64), (arm, ARM64)])
    with store.lease():
        desc = store.add_manifest(index.to_json(), ref, mediatypes.OCI_INDEX)
    return desc, amd, arm


def test_index_entries_state_platform_and_arm64_variant(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    desc, _amd, _arm = _index(store, "app:1")
    index = ImageIndex.model_validate_json(store.read_blob(desc.digest))
    assert [str(p) for p in index.platforms] == ["linux/amd64", "linux/arm64/v8"]
    assert all(m.artifact_type == mediatypes.ARTIFACT_TYPE for m in index.manifests)
    image = store.resolve("app:1")
    assert image.is_index and image.digest == desc.digest


def test_manifest_picks_the_asked_platform_and_finds_it_by_digest(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    _, amd, arm = _index(store, "app:1")
    image, manifest = store.manifest("app:1", ARM64)
    assert image.digest == arm.digest and image.ref == "app:1"
    assert store.config(manifest).platform.matches(ARM64)
    image, _ = store.manifest("app:1", AMD64)
    assert image.digest == amd.digest
    # An instance records the platform manifest it booted; it resolves under the index's tag.
    assert store.resolve(arm.digest).ref == "app:1"
    assert store.manifest(arm.digest)[0].digest == arm.digest


def test_gc_keeps_children_and_remove_sweeps_them(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    desc, amd, arm = _index(store, "app:1")
    assert store.gc() == []
    for digest in (desc.digest, amd.digest, arm.digest):
        assert store.has_blob(digest)
    store.tag("app:1", "app:2")
    assert store.resolve("app:2").digest == desc.digest
    store.remove("app:1")
    assert store.has_blob(arm.digest)
    store.remove("app:2")
    assert [p for p in store.blobs_dir.iterdir() if not p.name.startswith(".")] == []


def test_partial_index_runs_its_platform_and_names_the_missing_one(tmp_path: Path) -> None:
    full = ImageStore(tmp_path / "full")
    desc, amd, _ = _index(full, "app:1")
    node = ImageStore(tmp_path / "node")
    # What a node's pull leaves: the index, one platform's manifest and its blobs.
    _, manifest = full.manifest("app:1", AMD64)
    for blob in [manifest.config, *manifest.layers]:
        node.put_bytes(full.read_blob(blob.digest), blob.media_type)
    node.put_bytes(full.read_blob(amd.digest), amd.media_type)
    with pytest.raises(ImageError, match="add the blobs"):
        node.add_manifest(full.read_blob(desc.digest), "app:1", mediatypes.OCI_INDEX)
    node.add_manifest(full.read_blob(desc.digest), "app:1", mediatypes.OCI_INDEX, partial=True)
    assert node.manifest("app:1", AMD64)[0].digest == amd.digest
    with pytest.raises(ImageError, match=r"pull --platform linux/arm64 app:1"):
        node.manifest("app:1", ARM64)
    assert [here for _, here in node.entries(node.resolve("app:1"))] == [True, False]
    assert node.gc() == []
    # Save and load carry what the node has; the loaded copy is as partial.
    node.save(["app:1"], tmp_path / "app.tar")
    other = ImageStore(tmp_path / "other")
    assert other.load(tmp_path / "app.tar") == ["app:1"]
    assert other.manifest("app:1", AMD64)[0].digest == amd.digest
    assert other.stored_size(other.resolve("app:1")) == node.stored_size(node.resolve("app:1"))


def test_index_with_a_broken_present_child_is_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    desc, amd, _ = _index(store, "app:1")
    data = store.read_blob(desc.digest)
    _, manifest = store.manifest("app:1", AMD64)
    store.remove("app:1")
    # The amd64 manifest is back but one of its layers is not.
    store.put_bytes(ImageManifest.model_validate_json(manifest.to_json()).to_json(), amd.media_type)
    with pytest.raises(ImageError, match="not in the store"):
        store.add_manifest(data, "app:1", mediatypes.OCI_INDEX, partial=True)
    with pytest.raises(ImageError, match="no such image"):
        store.resolve("app:1")


def test_an_index_without_the_platform_says_which_it_has(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    amd = _platform_manifest(store, "amd64", b"x")
    index = ImageIndex.of_platforms([(amd, AMD64)])
    store.add_manifest(index.to_json(), "app:1", mediatypes.OCI_INDEX)
    with pytest.raises(ImageError, match=r"no linux/arm64 manifest \(its platforms: linux/amd64\)"):
        store.manifest("app:1", ARM64)
