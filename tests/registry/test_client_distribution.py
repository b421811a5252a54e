"""The registry client against a real CNCF distribution registry (Debian's docker-registry)."""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path

import pytest

from kit.registry import (
    CountingTransport,
    Distribution,
    FlakyTransport,
    Interrupted,
    Recorder,
    blob_digests,
    make_image,
    push_concurrently,
    run_distribution,
)
from ukedge.errors import AuthenticationError, NotFoundError, RegistryError, UsageError
from ukedge.image import Descriptor, ImageIndex, ImageStore, mediatypes, parse_platform
from ukedge.registry import RegistryClient, login, pull, push

pytestmark = pytest.mark.interop


def _client(registry: Distribution, tmp_path: Path, **kwargs: object) -> RegistryClient:
    return RegistryClient(registry.host, state_dir=tmp_path / "client-state", **kwargs)  # type: ignore[arg-type]


def test_push_then_pull_is_identical(distribution: Distribution, tmp_path: Path) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    digest = make_image(src, "app:1", kernel=os.urandom(300_000), runtime=os.urandom(50_000))
    remote = f"{distribution.host}/team/app:1"
    with _client(distribution, tmp_path, chunk_size=64 * 1024) as client:
        assert push(src, "app:1", remote, client=client) == digest
        recorder = Recorder()
        image = pull(dst, remote, client=client, progress=recorder)
    assert image.ref == remote
    assert image.digest == digest
    assert blob_digests(src, "app:1") == blob_digests(dst, remote)
    assert set(recorder.outcomes.values()) == {"downloaded"}
    assert dst.config(dst.manifest(remote)[1]).name == "app"


def test_second_push_transfers_no_blob(distribution: Distribution, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    make_image(store, "app:1", kernel=os.urandom(200_000))
    transport = CountingTransport()
    remote = f"{distribution.host}/team/app:1"
    with _client(distribution, tmp_path, transport=transport, chunk_size=64 * 1024) as client:
        push(store, "app:1", remote, client=client)
        first = transport.bytes_sent()
        transport.reset()
        recorder = Recorder()
        push(store, "app:1", remote, client=client, progress=recorder)
    assert set(recorder.outcomes.values()) == {"exists"}
    assert transport.count("PATCH") == 0
    assert transport.count("POST") == 0
    assert transport.count("PUT") == 1  # the manifest only
    manifest_size = len(store.read_blob(store.resolve("app:1").digest))
    assert transport.bytes_sent() == manifest_size < first


def test_pull_fetches_only_missing_blobs(distribution: Distribution, tmp_path: Path) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    kernel = os.urandom(100_000)
    make_image(src, "a:1", kernel=kernel)
    make_image(src, "b:1", kernel=kernel)
    with _client(distribution, tmp_path) as client:
        push(src, "a:1", f"{distribution.host}/a:1", client=client)
        push(src, "b:1", f"{distribution.host}/b:1", client=client)
        pull(dst, f"{distribution.host}/a:1", client=client)
        recorder = Recorder()
        pull(dst, f"{distribution.host}/b:1", client=client, progress=recorder)
    by_label = {recorder.labels[d]: o for d, o in recorder.outcomes.items()}
    assert by_label == {"kernel": "cached", "initrd": "downloaded", "config": "cached"}


def test_shared_layer_is_mounted_across_repositories(
    distribution: Distribution, tmp_path: Path
) -> None:
    store = ImageStore(tmp_path / "s")
    kernel = os.urandom(150_000)
    make_image(store, "one:1", kernel=kernel, name="one")
    make_image(store, "two:1", kernel=kernel, name="two")
    transport = CountingTransport()
    with _client(distribution, tmp_path, transport=transport) as client:
        push(store, "one:1", f"{distribution.host}/team/one:1", client=client)
        transport.reset()
        recorder = Recorder()
        push(store, "two:1", f"{distribution.host}/team/two:1", client=client, progress=recorder)
        assert client.blob_size("team/two", store.manifest("two:1")[1].layers[0].digest) == len(
            kernel
        )
    outcomes = {recorder.labels[d]: o for d, o in recorder.outcomes.items()}
    assert outcomes["kernel"] == "mounted"
    assert outcomes["initrd"] == "uploaded"
    assert transport.count("POST", "mount=") == 1
    # The kernel's bytes never went out again: only the new initrd, the config and the manifest.
    assert transport.bytes_sent() < len(kernel)


def test_interrupted_chunked_upload_resumes_at_registry_offset(
    distribution: Distribution, tmp_path: Path
) -> None:
    store = ImageStore(tmp_path / "s")
    chunk = 64 * 1024
    kernel = os.urandom(16 * chunk + 123)
    digest = make_image(store, "big:1", kernel=kernel)
    kernel_digest = store.manifest("big:1")[1].layers[0].digest
    remote = f"{distribution.host}/team/big:1"
    transport = CountingTransport()
    with _client(
        distribution, tmp_path, chunk_size=chunk, transport=transport, max_workers=1
    ) as client:
        with pytest.raises(Interrupted):
            push(store, "big:1", remote, client=client, progress=Recorder(stop_after=5 * chunk))
        record = client.uploads.load(client.registry, "team/big", kernel_digest)
        assert record is not None
        assert record.offset == 5 * chunk
        assert client.blob_size("team/big", kernel_digest) is None
        assert client.head_manifest("team/big", "1") is None
        transport.reset()
        recorder = Recorder()
    # A new client (a new process, as far as the registry knows) picks the session up from disk.
    with _client(
        distribution, tmp_path, chunk_size=chunk, transport=transport, max_workers=1
    ) as client:
        assert push(store, "big:1", remote, client=client, progress=recorder) == digest
        assert client.uploads.load(client.registry, "team/big", kernel_digest) is None
    assert recorder.outcomes[kernel_digest] == "resumed"
    assert recorder.updates[kernel_digest][0] == 5 * chunk
    assert transport.count("GET", "/blobs/uploads/") == 1  # the status query
    assert transport.count("PATCH") == 12  # 11 full chunks and the 123-byte tail, not 17
    dst = ImageStore(tmp_path / "dst")
    with _client(distribution, tmp_path) as client:
        pull(dst, remote, client=client)
    assert blob_digests(store, "big:1") == blob_digests(dst, remote)


def test_stale_upload_session_starts_over(distribution: Distribution, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    make_image(store, "app:1", kernel=os.urandom(100_000))
    kernel_digest = store.manifest("app:1")[1].layers[0].digest
    with _client(distribution, tmp_path, chunk_size=32 * 1024) as client:
        bogus = f"http://{distribution.host}/v2/team/app/blobs/uploads/00000000-0000-0000-0000-000000000000"
        client.uploads.save(client.registry, "team/app", kernel_digest, bogus, 65536)
        recorder = Recorder()
        push(store, "app:1", f"{distribution.host}/team/app:1", client=client, progress=recorder)
    assert recorder.outcomes[kernel_digest] == "uploaded"


def test_concurrent_pushes_sharing_layers(distribution: Distribution, tmp_path: Path) -> None:
    push_concurrently(distribution.host, tmp_path)


def test_tags_and_catalog_follow_pagination(distribution: Distribution, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    make_image(store, "app:1")
    with _client(distribution, tmp_path) as client:
        for tag in ("a", "b", "c", "d", "e"):
            push(store, "app:1", f"{distribution.host}/team/app:{tag}", client=client)
        push(store, "app:1", f"{distribution.host}/other:1", client=client)
        assert sorted(client.tags("team/app", page_size=2)) == ["a", "b", "c", "d", "e"]
        assert sorted(client.catalog(page_size=1)) == ["other", "team/app"]
        with pytest.raises(NotFoundError, match="not found"):
            client.tags("nothing/here")


def test_pull_by_digest_and_unknown_tag(distribution: Distribution, tmp_path: Path) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    digest = make_image(src, "app:1")
    with _client(distribution, tmp_path) as client:
        push(src, "app:1", f"{distribution.host}/app:1", client=client)
        image = pull(dst, f"{distribution.host}/app@{digest}", client=client)
        assert image.digest == digest
        with pytest.raises(NotFoundError, match="MANIFEST_UNKNOWN"):
            pull(dst, f"{distribution.host}/app:nope", client=client)
    assert len(dst.images()) == 1


def test_pull_of_an_index_takes_the_asked_platform_only(
    distribution: Distribution, tmp_path: Path
) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    amd64 = make_image(src, "app:amd64", name="amd64")
    other = make_image(src, "app:other", name="other")
    size = {d: len(src.read_blob(d)) for d in (amd64, other)}

    def entry(digest: str, arch: str) -> Descriptor:
        return Descriptor.model_validate(
            {
                "mediaType": mediatypes.OCI_MANIFEST,
                "digest": digest,
                "size": size[digest],
                "platform": {"os": "linux", "architecture": arch},
            }
        )

    index = ImageIndex(manifests=[entry(other, "arm64"), entry(amd64, "amd64")])
    with src.lease():
        index_digest = src.add_manifest(index.to_json(), "app:multi", mediatypes.OCI_INDEX).digest
    remote = f"{distribution.host}/team/multi:1"
    with _client(distribution, tmp_path) as client:
        assert push(src, "app:multi", remote, client=client) == index_digest
        image = pull(dst, remote, client=client, platform="linux/amd64")
    # The node keeps the index (what a deployment pins) and only its own platform's manifest.
    assert image.digest == index_digest and image.is_index
    chosen, manifest = dst.manifest(remote, parse_platform("linux/amd64"))
    assert chosen.digest == amd64
    assert dst.config(manifest).name == "amd64"
    assert not dst.has_blob(other)


def test_reference_without_registry_is_refused_unless_defaulted(
    distribution: Distribution, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImageStore(tmp_path / "s")
    digest = make_image(store, "app:1")
    with pytest.raises(UsageError, match="names no registry: push needs HOST"):
        push(store, "app:1")
    monkeypatch.setenv("UKEDGE_REGISTRY", distribution.host)
    assert push(store, "app:1") == digest
    assert pull(ImageStore(tmp_path / "dst"), "app:1").ref == f"{distribution.host}/app:1"


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the only bcrypt at hand; distribution's htpasswd accepts nothing else

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


def test_basic_auth_registry(tmp_path: Path) -> None:
    """distribution's htpasswd auth: a ``Basic`` challenge, answered with saved credentials."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"carol:{_bcrypt('hunter22')}\n")
    extra = f"auth:\n  htpasswd:\n    realm: ukedge-test\n    path: {htpasswd}\n"
    store = ImageStore(tmp_path / "s")
    digest = make_image(store, "app:1")
    with run_distribution(tmp_path / "basic", extra_config=extra) as registry:
        remote = f"{registry.host}/team/app:1"
        with pytest.raises(AuthenticationError, match=f"ukedge login {registry.host}"):
            push(store, "app:1", remote)
        with pytest.raises(AuthenticationError, match="refused the password"):
            login(registry.host, "carol", "wrong")
        assert login(registry.host, "carol", "hunter22") is True
        assert push(store, "app:1", remote) == digest
        assert pull(ImageStore(tmp_path / "d"), remote).digest == digest


@pytest.mark.parametrize("after_send", [False, True], ids=["lost-request", "lost-answer"])
def test_dropped_connection_during_chunked_upload_is_retried(
    distribution: Distribution, tmp_path: Path, after_send: bool
) -> None:
    store, dst = ImageStore(tmp_path / "s"), ImageStore(tmp_path / "d")
    chunk = 32 * 1024
    make_image(store, "app:1", kernel=os.urandom(8 * chunk + 5))
    kernel = store.manifest("app:1")[1].layers[0].digest
    remote = f"{distribution.host}/team/app:1"
    transport = FlakyTransport("PATCH", 4, after_send=after_send)
    recorder = Recorder()
    with _client(
        distribution, tmp_path, transport=transport, chunk_size=chunk, retry_delay=0
    ) as client:
        push(store, "app:1", remote, client=client, progress=recorder)
        pull(dst, remote, client=client)
    assert blob_digests(store, "app:1") == blob_digests(dst, remote)
    if not after_send:
        # The registry never saw the failed chunk: the retry resumed at its offset.
        assert recorder.outcomes[kernel] == "resumed"
        assert transport.count("PATCH") == 9  # each of the nine chunks went through once
    else:
        # distribution cancels a session whose client lost track of it; the retry starts over.
        assert recorder.outcomes[kernel] in {"resumed", "uploaded"}


class _KillOnce(Recorder):
    """SIGKILLs the registry and starts it again once ``at`` bytes of the kernel are up."""

    def __init__(self, registry: Distribution, digest: str, at: int) -> None:
        super().__init__()
        self.registry, self.digest, self.at, self.done = registry, digest, at, False

    def update(self, digest: str, completed: int) -> None:
        super().update(digest, completed)
        if digest == self.digest and completed >= self.at and not self.done:
            self.done = True
            self.registry.kill()
            self.registry.start()


def test_registry_killed_mid_upload_then_restarted(
    distribution: Distribution, tmp_path: Path
) -> None:
    """The upload session survives a SIGKILL of the registry; the push continues from it."""
    store, dst = ImageStore(tmp_path / "s"), ImageStore(tmp_path / "d")
    chunk = 32 * 1024
    digest = make_image(store, "app:1", kernel=os.urandom(12 * chunk + 1))
    kernel = store.manifest("app:1")[1].layers[0].digest
    remote = f"{distribution.host}/team/app:1"
    transport = CountingTransport()
    killer = _KillOnce(distribution, kernel, 5 * chunk)
    with _client(
        distribution,
        tmp_path,
        transport=transport,
        chunk_size=chunk,
        max_workers=1,
        retry_delay=0.2,
    ) as client:
        assert push(store, "app:1", remote, client=client, progress=killer) == digest
        pull(dst, remote, client=client)
    assert killer.done
    # The next PATCH reaches the new process (on a new connection, or after a retry and a
    # status query), which continues the same upload session: no chunk is sent twice.
    assert transport.count("PATCH") == 13
    assert blob_digests(store, "app:1") == blob_digests(dst, remote)


def test_a_push_waits_for_another_uploading_the_same_blob(
    distribution: Distribution, tmp_path: Path
) -> None:
    """Two pushes sharing a state directory never feed one upload session: the second waits
    for the first (here: the test holding the lock) and then finds the blob there."""
    store = ImageStore(tmp_path / "s")
    make_image(store, "a:1", kernel=os.urandom(10 * 32 * 1024))
    kernel = store.manifest("a:1")[1].layers[0]
    remote = f"{distribution.host}/team/app:1"
    transport = CountingTransport()
    recorder = Recorder()
    errors: list[BaseException] = []
    client = _client(distribution, tmp_path, chunk_size=32 * 1024, transport=transport)

    def waiting_push() -> None:
        try:
            push(store, "a:1", remote, client=client, progress=recorder)
        except BaseException as exc:
            errors.append(exc)

    with client:
        with client.uploads.exclusive(client.registry, "team/app", kernel.digest):
            thread = threading.Thread(target=waiting_push)
            thread.start()
            deadline = time.monotonic() + 30
            while transport.count("HEAD", kernel.digest) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            # "The other process" uploads the blob meanwhile, then lets go.
            with RegistryClient(distribution.host, state_dir=tmp_path / "other") as other:
                other.upload_blob(
                    "team/app", kernel.digest, kernel.size, lambda: store.open_blob(kernel.digest)
                )
        thread.join(60)
    assert not errors, errors
    assert recorder.outcomes[kernel.digest] == "exists"
    assert transport.count("PATCH") == 0
    assert transport.count("HEAD", kernel.digest) == 2  # before waiting, and after


def test_pull_cancelled_by_its_caller_stores_no_image(
    distribution: Distribution, tmp_path: Path
) -> None:
    src, dst = ImageStore(tmp_path / "s"), ImageStore(tmp_path / "d")
    make_image(src, "app:1", kernel=os.urandom(4 << 20))
    remote = f"{distribution.host}/team/app:1"
    cancel = threading.Event()

    class CancelOnFirstBytes(Recorder):
        def update(self, digest: str, completed: int) -> None:
            super().update(digest, completed)
            cancel.set()  # as a host agent does when the API client goes away

    with _client(distribution, tmp_path) as client:
        push(src, "app:1", remote, client=client)
        with pytest.raises(RegistryError, match="cancelled"):
            pull(dst, remote, client=client, progress=CancelOnFirstBytes(), cancel=cancel)
    assert dst.images() == []
    kernel = src.manifest("app:1")[1].layers[0].digest
    assert not dst.has_blob(kernel)


def test_pinned_pull_of_a_held_image_needs_no_registry(
    distribution: Distribution, tmp_path: Path
) -> None:
    store = ImageStore(tmp_path / "s")
    digest = make_image(store, "app:1")
    with _client(distribution, tmp_path) as client:
        push(store, "app:1", f"{distribution.host}/team/app:1", client=client)
    distribution.stop()  # the uplink is gone
    recorder = Recorder()
    image = pull(store, f"{distribution.host}/team/app@{digest}", progress=recorder)
    assert image.digest == digest
    assert set(recorder.outcomes.values()) == {"cached"}
    with (
        _client(distribution, tmp_path, retries=0) as client,
        pytest.raises(RegistryError, match="cannot reach"),
    ):
        pull(store, f"{distribution.host}/team/app:1", client=client)  # a tag must be asked for
