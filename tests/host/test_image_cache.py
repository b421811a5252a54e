"""The node's image cache on a real store: listing, LRU eviction under a budget, remove, prune.

Images are real ukedge images: built by the real builder where layer sharing matters (kernel,
init and app layers as a build makes them), else written with ImageStore directly (random
layers, so sizes are exact and each test's blobs are its own). Pulls through a real hub are in
test_image_cache_hub.py.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from kit.registry import make_image
from ukedge.build import build_image
from ukedge.errors import ImageError, UsageError
from ukedge.host.images import (
    ImageCache,
    UnpackedLayers,
    budget_from_env,
    shared_runtime_from_env,
)
from ukedge.image import ImageStore, digest_hex

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KERNEL = os.urandom(200_000)


class Users:
    """What the instance manager would report: one digest per existing instance."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def __call__(self) -> Iterable[str]:
        return list(self.digests)


def _cache(tmp_path: Path, budget: int | None = None) -> tuple[ImageCache, Users]:
    users = Users()
    cache = ImageCache(
        ImageStore(tmp_path / "store"), UnpackedLayers(tmp_path / "unpacked"), budget, users
    )
    return cache, users


def _app(store: ImageStore, ref: str, size: int = 30_000) -> str:
    return make_image(store, ref, kernel=KERNEL, app=os.urandom(size), name=ref.split(":")[0])


def _refs(cache: ImageCache) -> list[str]:
    return [row.ref for row in cache.images()]


def _variant(tmp_path: Path, name: str) -> Path:
    """examples/hello-c with a different app binary (so a different app layer only)."""
    context = tmp_path / name
    shutil.copytree(EXAMPLES / "hello-c", context)
    with (context / "hello.c").open("a") as f:
        f.write(f'\n__attribute__((used)) const char ukedge_variant[] = "{name}";\n')
    return context


def test_images_report_last_use_and_in_use(tmp_path: Path) -> None:
    cache, users = _cache(tmp_path)
    a = _app(cache.store, "a:1")
    b = _app(cache.store, "b:1")
    cache.store.tag("a:1", "a:latest")
    rows = {row.ref: row for row in cache.images()}
    assert sorted(rows) == ["a:1", "a:latest", "b:1"]
    assert all(row.last_used is None and not row.in_use for row in rows.values())

    before = time.time()
    cache.touch(a)
    users.digests = [b]
    rows = {row.ref: row for row in cache.images()}
    assert rows["a:1"].last_used is not None and rows["a:1"].last_used >= before
    assert rows["a:latest"].last_used == rows["a:1"].last_used  # one image, two names
    assert rows["b:1"].in_use and not rows["a:1"].in_use
    assert rows["b:1"].repository == "b" and rows["b:1"].tag == "1"
    assert rows["b:1"].runtime == "static"
    assert rows["b:1"].size == sum(rows["b:1"].layers) + len(
        cache.store.read_blob(cache.store.manifest("b:1")[1].config.digest)
    )


def test_inspect_is_what_image_inspect_prints(tmp_path: Path) -> None:
    cache, _ = _cache(tmp_path)
    digest = _app(cache.store, "a:1")
    doc = cache.inspect("a:1")
    assert list(doc) == ["ref", "digest", "size", "manifest", "config"]
    assert doc["ref"] == "a:1" and doc["digest"] == digest
    assert doc["manifest"]["artifactType"] == "application/vnd.ukedge.image.v1"
    assert doc["config"]["entrypoint"] == ["/app/run"]
    with pytest.raises(ImageError, match="no such image: nope:1"):
        cache.inspect("nope:1")


def test_last_used_survives_a_new_cache_on_the_same_store(tmp_path: Path) -> None:
    cache, _ = _cache(tmp_path)
    digest = _app(cache.store, "a:1")
    cache.touch(digest)
    used = cache.images()[0].last_used
    again, _ = _cache(tmp_path)
    assert again.images()[0].last_used == used


def test_concurrent_processes_share_the_usage_table(tmp_path: Path) -> None:
    """The agent and a local CLI touching the same store at once: every write lands."""
    cache, _ = _cache(tmp_path)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from ukedge.host import ImageCache, UnpackedLayers
        from ukedge.image import ImageStore

        root, tag = Path(sys.argv[1]), sys.argv[2]
        cache = ImageCache(ImageStore(root / "store"), UnpackedLayers(root / "unpacked"))
        for i in range(100):
            cache.touch(f"sha256:{tag}{i:063d}")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag]) for tag in "ab"]
    for i in range(100):
        cache.usage.pulled(f"sha256:c{i:063d}")
    assert [p.wait(60) for p in procs] == [0, 0]
    rows = cache.usage.all()
    assert len(rows) == 300
    assert all(rows[f"sha256:a{i:063d}"].last_used for i in range(100))


def test_evict_removes_least_recently_used_first(tmp_path: Path) -> None:
    cache, _ = _cache(tmp_path)
    digests = {ref: _app(cache.store, ref, 100_000) for ref in ("a:1", "b:1", "c:1", "d:1")}
    now = time.time()
    # used: c long ago, a recently; b pulled an hour ago and never used; d pulled just now
    cache.usage.touch(digests["c:1"], now - 7200)
    cache.usage.touch(digests["a:1"], now - 60)
    cache.usage.pulled(digests["b:1"], now - 3600)
    cache.usage.pulled(digests["d:1"], now - 1)
    full = cache.usage_bytes()
    cache.budget = full - 150_000  # two app layers must go
    report = cache.evict()
    assert report.removed == ["b:1", "c:1"]
    assert _refs(cache) == ["a:1", "d:1"]
    assert cache.usage_bytes() <= cache.budget
    assert report.reclaimed_bytes == full - cache.usage_bytes()
    assert digests["c:1"] not in cache.usage.all()  # forgotten with the image
    assert cache.evict().removed == []  # within budget now


def test_a_pinned_image_is_not_evicted_until_unpinned(tmp_path: Path) -> None:
    """A run pins the image it pulls until its instance refers to it."""
    cache, _ = _cache(tmp_path)
    old = _app(cache.store, "old:1", 100_000)
    cache.usage.pulled(old, time.time() - 3600)
    _app(cache.store, "new:1", 100_000)
    cache.budget = cache.usage_bytes() - 50_000  # one must go: old, by recency
    with cache.pinned("old:1", "hub.example:5000/old:1"):
        assert cache.evict().removed == ["new:1"]
    assert _refs(cache) == ["old:1"]
    _app(cache.store, "new:1", 100_000)
    assert cache.evict().removed == ["old:1"], "unpinned, the least recently used goes again"


def test_never_used_images_go_in_the_order_the_store_got_them(tmp_path: Path) -> None:
    cache, _ = _cache(tmp_path)
    old, new = _app(cache.store, "old:1"), _app(cache.store, "new:1")
    then = time.time() - 86_400
    os.utime(cache.store.blob_path(old), (then, then))  # built a day ago
    cache.budget = cache.usage_bytes() - 1
    assert cache.evict().removed == ["old:1"]
    assert _refs(cache) == ["new:1"] and cache.store.has_blob(new)


def test_shared_layers_are_not_counted_twice(tmp_path: Path) -> None:
    """Four images share a 200 kB kernel; removing one frees only its own 30 kB, so a budget
    60 kB under the total takes exactly two images, and the kernel stays."""
    cache, _ = _cache(tmp_path)
    for ref in ("a:1", "b:1", "c:1", "d:1"):
        _app(cache.store, ref)
        time.sleep(0.01)  # distinct store times: a defined order
    kernel = cache.store.manifest("a:1")[1].layers[0].digest
    cache.budget = cache.usage_bytes() - 60_000
    report = cache.evict()
    assert len(report.removed) == 2
    assert 60_000 <= report.reclaimed_bytes < 70_000  # two app layers, manifests; no kernel
    assert cache.store.has_blob(kernel)
    assert cache.usage_bytes() <= cache.budget


def test_images_in_use_stay_even_over_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache, users = _cache(tmp_path)
    a, b = _app(cache.store, "a:1"), _app(cache.store, "b:1")
    c = _app(cache.store, "c:1")
    cache.touch(c)  # the most recently used, but in no instance
    users.digests = [a, b]  # an exited instance still counts: it may be started again
    cache.budget = 1000
    with caplog.at_level(logging.INFO, logger="ukedge.host.images._cache"):
        report = cache.evict()
    assert report.removed == ["c:1"]
    assert _refs(cache) == ["a:1", "b:1"]
    assert cache.usage_bytes() > cache.budget
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "INFO" and "evicted c:1" in m for level, m in messages)
    assert any(level == "WARNING" and "over its budget" in m for level, m in messages)


def test_remove_refuses_an_image_in_use_without_force(tmp_path: Path) -> None:
    cache, users = _cache(tmp_path)
    digest = _app(cache.store, "a:1")
    users.digests = [digest, digest]
    with pytest.raises(ImageError, match=r"used by 2 instances .*--force"):
        cache.remove("a:1")
    assert _refs(cache) == ["a:1"]

    # another name of the same image may go: the image stays for the instances
    cache.store.tag("a:1", "a:latest")
    assert cache.remove("a:latest") == ["Untagged: a:latest"]
    lines = cache.remove("a:1", force=True)
    assert lines[0] == "Untagged: a:1"
    assert f"Deleted: {digest}" in lines and len(lines) == 1 + 4  # manifest, config, 2 layers
    assert cache.images() == [] and cache.usage_bytes() == 0


def test_remove_by_id_takes_every_name_and_asks_for_force_when_several(tmp_path: Path) -> None:
    cache, _ = _cache(tmp_path)
    digest = _app(cache.store, "a:1")
    cache.store.tag("a:1", "mirror/a:1")
    short = digest_hex(digest)[:12]
    with pytest.raises(ImageError, match=r"has 2 names .*--force"):
        cache.remove(short)
    assert cache.remove(short, force=True)[:2] == ["Untagged: a:1", "Untagged: mirror/a:1"]
    assert cache.images() == []


@pytest.mark.kernel
def test_prune_removes_unused_images_and_their_unpacked_layers(tmp_path: Path) -> None:
    """Real builds: two images sharing kernel and init layers; one is in use."""
    cache, users = _cache(tmp_path)
    kept = build_image(_variant(tmp_path, "kept"), ["kept:1"], store=cache.store)
    build_image(_variant(tmp_path, "gone"), ["gone:1", "gone:2"], store=cache.store)
    layers = {ref: cache.store.manifest(ref)[1].layers for ref in ("kept:1", "gone:1")}
    shared = [layer.digest for layer in layers["kept:1"][:2]]
    assert shared == [layer.digest for layer in layers["gone:1"][:2]]  # kernel, init
    gone_app = layers["gone:1"][2]
    for ref_layers in layers.values():
        for layer in ref_layers:
            cache.layers.unpacked(cache.store, layer)
    users.digests = [kept.digest]

    before = cache.usage_bytes()
    report = cache.prune()
    assert report.removed == ["gone:1", "gone:2"]
    assert report.reclaimed_bytes == before - cache.usage_bytes()
    assert report.reclaimed_bytes >= gone_app.size
    assert _refs(cache) == ["kept:1"]
    assert not (cache.layers.root / digest_hex(gone_app.digest)).exists()
    for digest in shared:
        assert (cache.layers.root / digest_hex(digest)).exists()
    assert cache.prune().removed == []


def test_removals_tell_what_went_for_derived_data(tmp_path: Path) -> None:
    """The agent hooks the manager's prewarm snapshots here: they are keyed by manifest."""
    told: list[set[str]] = []
    cache = ImageCache(
        ImageStore(tmp_path / "store"),
        UnpackedLayers(tmp_path / "unpacked"),
        on_remove=lambda digests: told.append(set(digests)),
    )
    gone, kept = _app(cache.store, "gone:1"), _app(cache.store, "kept:1")
    cache.remove("gone:1")
    assert len(told) == 1 and gone in told[0] and kept not in told[0]
    cache.prune()
    assert kept in told[-1]


def test_no_budget_never_evicts(tmp_path: Path) -> None:
    cache, _ = _cache(tmp_path)
    _app(cache.store, "a:1")
    assert cache.evict().removed == []
    with pytest.raises(UsageError, match="0 or more bytes"):
        _cache(tmp_path, budget=-1)


def test_budget_from_env() -> None:
    assert budget_from_env({}) is None
    assert budget_from_env({"UKEDGE_IMAGE_BUDGET": " "}) is None
    assert budget_from_env({"UKEDGE_IMAGE_BUDGET": "2G"}) == 2 << 30
    assert budget_from_env({"UKEDGE_IMAGE_BUDGET": "500MiB"}) == 500 << 20
    with pytest.raises(UsageError, match="UKEDGE_IMAGE_BUDGET: invalid size 'lots'"):
        budget_from_env({"UKEDGE_IMAGE_BUDGET": "lots"})


def test_prune_of_a_node_owning_its_unpacked_layers_sweeps_leftovers(tmp_path: Path) -> None:
    cache, _ = _cache(tmp_path)
    kernel = gzip.compress(os.urandom(5000))
    make_image(cache.store, "a:1", kernel=kernel, app=gzip.compress(os.urandom(3000)))
    layers = cache.store.manifest("a:1")[1].layers
    for layer in layers:
        cache.layers.unpacked(cache.store, layer)
    cache.store.remove("a:1")  # behind the cache's back: its unpacked copies stay
    leftover = cache.layers.root / digest_hex(layers[-1].digest)
    assert leftover.exists()
    cache.prune()
    assert leftover.exists(), "the directory may serve other stores too"

    own = ImageCache(cache.store, cache.layers, own_layers=True)
    kept = make_image(cache.store, "b:1", kernel=kernel, app=gzip.compress(os.urandom(3000)))
    kept_layers = cache.store.manifest("b:1")[1].layers
    for layer in kept_layers:
        own.layers.unpacked(own.store, layer)
    (own.layers.root / ".partial.1.tmp").write_bytes(b"x")  # an unpack in progress
    own.in_use = lambda: [kept]
    assert own.prune().removed == []
    assert not leftover.exists()
    assert all((own.layers.root / digest_hex(layer.digest)).exists() for layer in kept_layers)
    assert (own.layers.root / ".partial.1.tmp").exists()


def test_a_runtime_image_is_derived_once_and_swept_with_its_layer(tmp_path: Path) -> None:
    """The shared-runtime files (erofs image, boot archive, mount points) are derived from the
    runtime layer once, reused, and go with the layer's blob like its unpacked copy."""
    layers = UnpackedLayers(tmp_path / "unpacked", shared_runtime=True)
    own = ImageCache(ImageStore(tmp_path / "store"), layers, own_layers=True)
    build_image(EXAMPLES / "sensor-agg", ["agg:1"], store=own.store)
    build_image(EXAMPLES / "hello-c", ["hello:1"], store=own.store)
    initrds = [x for x in own.store.manifest("agg:1")[1].layers if "initrd" in x.media_type]
    disk = layers.runtime_disk(own.store, initrds[0], initrds[1:])
    assert disk is not None and disk.mounts == ("/lib", "/usr")
    made = {p: p.stat().st_mtime_ns for p in (disk.image, disk.boot)}
    assert layers.runtime_disk(own.store, initrds[0], initrds[1:]) == disk
    assert {p: p.stat().st_mtime_ns for p in made} == made  # reused, not made again
    # A static runtime holds nothing worth an image: it boots from the initramfs.
    static = [x for x in own.store.manifest("hello:1")[1].layers if "initrd" in x.media_type]
    assert layers.runtime_disk(own.store, static[0], static[1:]) is None
    own.remove("agg:1")
    assert not disk.image.exists() and not disk.boot.exists()
    assert not any(layers.root.glob(f"{digest_hex(initrds[0].digest)}*"))


def test_shared_runtime_from_env() -> None:
    assert shared_runtime_from_env({}) is None
    assert shared_runtime_from_env({"UKEDGE_SHARED_RUNTIME": "off"}) is None
    assert shared_runtime_from_env({"UKEDGE_SHARED_RUNTIME": " pmem "}) == "pmem"
    assert shared_runtime_from_env({"UKEDGE_SHARED_RUNTIME": "blk"}) == "blk"
    with pytest.raises(UsageError, match="UKEDGE_SHARED_RUNTIME must be pmem, blk or off"):
        shared_runtime_from_env({"UKEDGE_SHARED_RUNTIME": "dax"})
