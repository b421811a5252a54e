from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

import pytest

from ukedge.errors import DigestMismatchError, ImageError, UsageError
from ukedge.image import (
    Descriptor,
    ImageConfig,
    ImageManifest,
    ImageStore,
    KernelInfo,
    digest_bytes,
    mediatypes,
)


def _image(store: ImageStore, ref: str, app: bytes, kernel: bytes = b"kernel") -> Descriptor:
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


def _blobs(store: ImageStore) -> set[str]:
    return {p.name for p in store.blobs_dir.iterdir()}


def test_layout_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    _image(store, "app:1", b"one")
    assert (tmp_path / "oci-layout").read_text() == '{"imageLayoutVersion":"1.0.0"}'
    index = (tmp_path / "index.json").read_text()
    assert '"org.opencontainers.image.ref.name":"app:1"' in index
    assert mediatypes.ARTIFACT_TYPE in index


def test_resolve_by_ref_digest_and_id_prefix(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    desc = _image(store, "app:1", b"one")
    assert store.resolve("app:1").digest == desc.digest
    assert store.resolve(desc.digest).ref == "app:1"
    assert store.resolve(desc.digest[7:19]).ref == "app:1"
    with pytest.raises(ImageError, match="no such image: app:2"):
        store.resolve("app:2")
    with pytest.raises(UsageError, match="invalid image reference"):
        store.resolve("App:1")


def test_shared_blobs_survive_until_last_reference(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    _image(store, "a:1", b"app-a")
    _image(store, "b:1", b"app-b")
    store.tag("a:1", "a:latest")
    shared_kernel = digest_bytes(b"kernel")[7:]
    store.remove("a:1")
    assert digest_bytes(b"app-a")[7:] in _blobs(store), "still tagged as a:latest"
    removed = store.remove("a:latest")
    assert "sha256:" + digest_bytes(b"app-a")[7:] in removed
    assert shared_kernel in _blobs(store), "b:1 still uses the kernel layer"
    store.remove("b:1")
    assert _blobs(store) == set()


def test_manifest_with_missing_blob_changes_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    before = (tmp_path / "index.json").read_bytes()
    manifest = ImageManifest(
        config=Descriptor(mediaType=mediatypes.CONFIG, digest=digest_bytes(b"absent"), size=6)
    )
    with pytest.raises(ImageError, match="not in the store"):
        store.add_manifest(manifest.to_json(), "x:1")
    assert (tmp_path / "index.json").read_bytes() == before
    assert _blobs(store) == set()


def test_blob_writer_rejects_wrong_digest_and_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with (
        pytest.raises(DigestMismatchError) as info,
        store.blob_writer(digest_bytes(b"expected")) as w,
    ):
        w.write(b"something else")
        w.commit()
    assert info.value.expected == digest_bytes(b"expected")
    assert list(store.blobs_dir.iterdir()) == []


def test_blob_writer_cleans_up_on_error(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(RuntimeError), store.blob_writer() as w:
        w.write(b"partial")
        raise RuntimeError("network went away")
    assert list(store.blobs_dir.iterdir()) == []


def _flock_waiters(path: Path) -> int:
    """How many flock requests on ``path`` the kernel holds blocked (``->`` in /proc/locks)."""
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return 0
    count = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[1] == "->" and fields[2] == "FLOCK":
            count += fields[6].rsplit(":", 1)[-1] == str(inode)
    return count


def test_gc_waits_for_writers_holding_a_lease(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    entered = threading.Event()
    done: list[list[str]] = []

    def collect() -> None:
        entered.wait()
        done.append(store.gc())

    thread = threading.Thread(target=collect)
    thread.start()
    with store.lease():
        blob = store.put_bytes(b"fresh layer", mediatypes.INITRD_GZIP)
        entered.set()
        # Wait until the kernel reports gc's lock request as blocked behind the lease (or gc
        # finished, which is the bug this test is for).
        deadline = time.monotonic() + 60
        while not done and not _flock_waiters(tmp_path / ".gc.lock"):
            assert time.monotonic() < deadline, "gc neither blocked on the lease nor finished"
            time.sleep(0.01)
        assert not done, "gc must not run while a writer holds a lease"
        assert store.has_blob(blob.digest)
    thread.join(60)
    assert done == [[blob.digest]], "once released, the unreferenced blob is swept"


def test_save_load_round_trip(tmp_path: Path) -> None:
    src = ImageStore(tmp_path / "src")
    desc = _image(src, "app:1", b"payload")
    archive = tmp_path / "app.tar"
    src.save(["app:1"], archive)
    dst = ImageStore(tmp_path / "dst")
    assert dst.load(archive) == ["app:1"]
    assert dst.resolve("app:1").digest == desc.digest
    assert _blobs(dst) == _blobs(src)
    _, manifest = dst.manifest("app:1")
    assert dst.config(manifest).name == "app"


def test_load_refuses_corrupt_archive_and_changes_nothing(tmp_path: Path) -> None:
    src = ImageStore(tmp_path / "src")
    _image(src, "app:1", b"payload")
    good = tmp_path / "good.tar"
    src.save(["app:1"], good)
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as tin, tarfile.open(bad, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member)
            content = data.read() if data else b""
            if content == b"payload":
                content = b"paYload"
            member.size = len(content)
            tout.addfile(member, io.BytesIO(content))
    dst = ImageStore(tmp_path / "dst")
    index_before = (tmp_path / "dst" / "index.json").read_bytes()
    with pytest.raises(DigestMismatchError):
        dst.load(bad)
    assert (tmp_path / "dst" / "index.json").read_bytes() == index_before
    assert _blobs(dst) == set()
    not_tar = tmp_path / "not.tar"
    not_tar.write_text("hello")
    with pytest.raises(ImageError, match="not a readable OCI archive"):
        dst.load(not_tar)
