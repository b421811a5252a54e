"""The store primitives the node's image cache builds on: untag many, collect with sizes, usage."""

from __future__ import annotations

import os
from pathlib import Path

from ukedge.image import (
    Descriptor,
    ImageConfig,
    ImageManifest,
    ImageStore,
    KernelInfo,
    mediatypes,
)


def _image(store: ImageStore, ref: str, app: bytes, kernel: bytes) -> Descriptor:
    config = ImageConfig(
        name="app",
        runtime="static",
        entrypoint=["/app/x"],
        kernel=KernelInfo(profile="minimal", version="6.1"),
    )
    with store.lease():
        layers = [
            store.put_bytes(kernel, mediatypes.KERNEL_GZIP),
            store.put_bytes(app, mediatypes.INITRD_GZIP),
        ]
        manifest = ImageManifest(
            artifactType=mediatypes.ARTIFACT_TYPE,
            config=store.put_bytes(config.to_json(), mediatypes.CONFIG),
            layers=layers,
        )
        return store.add_manifest(manifest.to_json(), ref)


def _on_disk(store: ImageStore) -> int:
    return sum(p.stat().st_size for p in store.blobs_dir.iterdir())


def test_disk_usage_counts_shared_blobs_once_and_skips_partial_writes(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    kernel = os.urandom(50_000)
    _image(store, "a:1", os.urandom(3000), kernel)
    one = store.disk_usage()
    _image(store, "b:1", os.urandom(3000), kernel)
    two = store.disk_usage()
    # the second image adds its app layer and manifest, not another kernel
    assert 3000 < two - one < 50_000
    assert two == _on_disk(store)
    writer = store.blob_writer()
    writer.write(os.urandom(10_000))
    assert store.disk_usage() == two  # an upload in progress is not the store's yet
    writer.abort()


def test_untag_removes_several_tags_at_once_and_sweeps_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    kernel = os.urandom(1000)
    _image(store, "a:1", b"a", kernel)
    _image(store, "b:1", b"b", kernel)
    store.tag("a:1", "a:latest")
    before = _on_disk(store)
    assert store.untag(["a:1", "a:latest", "missing:1"]) == ["a:1", "a:latest"]
    assert [i.ref for i in store.images()] == ["b:1"]
    assert _on_disk(store) == before  # blobs wait for collect


def test_collect_reports_the_size_of_each_removed_blob(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    kernel = os.urandom(20_000)
    app = os.urandom(7000)
    gone = _image(store, "a:1", app, kernel)
    _image(store, "b:1", b"b", kernel)
    sizes_before = {"sha256:" + p.name: p.stat().st_size for p in store.blobs_dir.iterdir()}
    store.untag(["a:1"])
    removed = store.collect()
    # the manifest, its app layer (config is shared: same config bytes); never the shared kernel
    assert gone.digest in removed
    assert all(removed[d] == sizes_before[d] for d in removed)
    assert len(app) in removed.values()
    assert len(kernel) not in removed.values()
    assert store.disk_usage() == sum(sizes_before.values()) - sum(removed.values())
    assert store.collect() == {}
    assert store.gc() == []
