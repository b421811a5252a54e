"""Helpers for the registry client tests: a real CNCF distribution registry, synthetic images,
progress recorders and a request-counting (real) HTTP transport.

The images are made with ImageStore directly (kernel bytes, initrd layers, an ImageConfig) so
these tests do not need a kernel build. Layer contents are random so that each test's blobs are
its own.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import pytest

from kit.net import free_port
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
from ukedge.registry import BlobOutcome

DOCKER_REGISTRY = "/usr/bin/docker-registry"


@dataclass
class Distribution:
    """A running docker-registry process on 127.0.0.1."""

    host: str
    root: Path
    process: subprocess.Popen[bytes] | None
    config: Path
    log: Path

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [DOCKER_REGISTRY, "serve", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_ready(f"http://{self.host}/v2/", self.process, self.log)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash or an OOM kill."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code in (200, 401):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer at {url}: {log.read_text()[-2000:]}")


def make_image(
    store: ImageStore,
    ref: str | None,
    *,
    kernel: bytes | None = None,
    app: bytes | None = None,
    runtime: bytes | None = None,
    labels: dict[str, str] | None = None,
    name: str = "app",
    architecture: Literal["amd64", "arm64"] = "amd64",
) -> str:
    """A ukedge image of a kernel layer and one or two initrd layers; returns its digest.
    ``ref`` None stores the manifest untagged (a platform of a multi-platform image)."""
    config = ImageConfig(
        architecture=architecture,
        name=name,
        runtime="static",
        entrypoint=["/app/run"],
        kernel=KernelInfo(profile="minimal", version="6.1"),
        labels=labels or {},
    )
    with store.lease():
        layers = [
            store.put_bytes(
                kernel if kernel is not None else os.urandom(4096), mediatypes.KERNEL_GZIP
            )
        ]
        if runtime is not None:
            layers.append(store.put_bytes(runtime, mediatypes.INITRD_GZIP))
        layers.append(
            store.put_bytes(app if app is not None else os.urandom(2048), mediatypes.INITRD_GZIP)
        )
        manifest = ImageManifest(
            artifactType=mediatypes.ARTIFACT_TYPE,
            config=store.put_bytes(config.to_json(), mediatypes.CONFIG),
            layers=layers,
        )
        return store.add_manifest(manifest.to_json(), ref).digest


def make_index(
    store: ImageStore, ref: str, *, gzipped: bool = False, **sizes: int
) -> dict[str, str]:
    """A multi-platform image of linux/amd64 and linux/arm64 (random layers, ``kernel`` and
    ``app`` bytes each; ``gzipped``: real gzip streams of them, for a node that unpacks them)
    tagged ``ref``; returns the digests: ``index``, ``amd64``, ``arm64``."""
    kernel, app = sizes.get("kernel", 4096), sizes.get("app", 2048)

    def layer(size: int) -> bytes:
        data = os.urandom(size)
        return gzip.compress(data, mtime=0) if gzipped else data

    digests = {
        arch: make_image(
            store,
            None,
            kernel=layer(kernel),
            app=layer(app),
            architecture=arch,  # type: ignore[arg-type]
        )
        for arch in ("amd64", "arm64")
    }
    entries = [
        (
            Descriptor(
                mediaType=mediatypes.OCI_MANIFEST,
                digest=digest,
                size=len(store.read_blob(digest)),
            ),
            parse_platform(f"linux/{arch}"),
        )
        for arch, digest in digests.items()
    ]
    index = ImageIndex.of_platforms(entries)
    with store.lease():
        digests["index"] = store.add_manifest(index.to_json(), ref, mediatypes.OCI_INDEX).digest
    return digests


def blob_digests(store: ImageStore, ref: str) -> dict[str, bytes]:
    """Every blob of an image (manifest included), by digest, with its bytes."""
    image, manifest = store.manifest(ref)
    digests = [image.digest, manifest.config.digest, *(layer.digest for layer in manifest.layers)]
    return {d: store.read_blob(d) for d in digests}


class Recorder:
    """A TransferProgress that records outcomes, and can raise once ``stop_after`` bytes moved."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.outcomes: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.updates: dict[str, list[int]] = {}
        self.stop_after = stop_after
        self._lock = threading.Lock()

    def start(self, digest: str, label: str, total: int) -> None:
        with self._lock:
            self.labels[digest] = label
            self.updates.setdefault(digest, [])

    def update(self, digest: str, completed: int) -> None:
        with self._lock:
            self.updates.setdefault(digest, []).append(completed)
        if self.stop_after is not None and completed >= self.stop_after:
            raise Interrupted(f"stopped at byte {completed}")

    def finish(self, digest: str, outcome: BlobOutcome) -> None:
        with self._lock:
            self.outcomes[digest] = str(outcome)


class Interrupted(Exception):
    """Raised by a Recorder to cut a transfer short, as Ctrl-C or a dropped link would."""


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting requests (method, path kind) and request body bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        size = int(request.headers.get("Content-Length") or 0)
        response = super().handle_request(request)
        with self._lock:
            self.requests.append((request.method, str(request.url), size))
        return response

    def count(self, method: str, fragment: str = "") -> int:
        with self._lock:
            return sum(1 for m, url, _ in self.requests if m == method and fragment in url)

    def bytes_sent(self) -> int:
        with self._lock:
            return sum(size for _, _, size in self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()


@contextlib.contextmanager
def run_distribution(workdir: Path, *, extra_config: str = "") -> Iterator[Distribution]:
    """Debian's docker-registry (CNCF distribution 2.8), filesystem storage, deletes enabled."""
    if not os.access(DOCKER_REGISTRY, os.X_OK):
        pytest.skip(f"{DOCKER_REGISTRY} is not installed (Debian package docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = workdir / "registry-data"
    config = workdir / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: ukedge-test-secret\n" + extra_config
    )
    registry = Distribution(f"127.0.0.1:{port}", root, None, config, workdir / "registry.log")
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[Distribution]:
    """A fresh docker-registry on 127.0.0.1:<free port>, storage in the test's tmp dir."""
    with run_distribution(tmp_path / "distribution") as registry:
        yield registry


class FlakyTransport(CountingTransport):
    """The real transport, but the ``nth`` request matching ``method`` fails with a dropped
    connection: before it is sent (``after_send=False``) or after the server handled it and
    before we read the answer (``after_send=True``, the nastier case)."""

    def __init__(self, method: str, nth: int, *, after_send: bool) -> None:
        super().__init__()
        self.method = method
        self.nth = nth
        self.after_send = after_send
        self.seen = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == self.method:
            with self._lock:
                self.seen += 1
                fail = self.seen == self.nth
            if fail and not self.after_send:
                raise httpx.WriteError("connection reset (injected)", request=request)
            if fail:
                response = super().handle_request(request)
                response.read()
                response.close()
                raise httpx.ReadError("connection reset (injected)", request=request)
        return super().handle_request(request)


def push_concurrently(host: str, tmp_path: Path, clients: int = 8) -> None:
    """``clients`` pushes at once of images sharing kernel and runtime layers (half into one
    repository, racing on the same blobs, half into their own); then every image pulls back
    identical, so no blob is corrupt or missing."""
    from ukedge.registry import RegistryClient, pull, push

    store = ImageStore(tmp_path / "concurrent-src")
    kernel, runtime = os.urandom(400_000), os.urandom(200_000)
    digests = {
        i: make_image(store, f"app{i}:1", kernel=kernel, runtime=runtime, name=f"app{i}")
        for i in range(clients)
    }
    refs = {i: f"{host}/{'team/shared' if i % 2 else f'team/app{i}'}:v{i}" for i in digests}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with RegistryClient(
                host, chunk_size=64 * 1024, state_dir=tmp_path / f"concurrent-state{i}"
            ) as c:
                push(store, f"app{i}:1", refs[i], client=c)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in digests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    dst = ImageStore(tmp_path / "concurrent-dst")
    with RegistryClient(host, state_dir=tmp_path / "concurrent-pull") as client:
        for i, digest in digests.items():
            assert pull(dst, refs[i], client=client).digest == digest
            assert blob_digests(store, f"app{i}:1") == blob_digests(dst, refs[i])
