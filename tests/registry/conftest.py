"""Fixtures for the registry client: a real CNCF distribution registry and synthetic images.

The images are made with ImageStore directly (kernel bytes, initrd layers, an ImageConfig) so
these tests do not need a kernel build. Layer contents are random so that each test's blobs are
its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ukedge.image import ImageConfig, ImageManifest, ImageStore, KernelInfo, mediatypes

DOCKER_REGISTRY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Distribution:
    """A running docker-registry process on 127.0.0.1."""

    host: str
    root: Path
    process: subprocess.Popen[bytes]


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer at {url}: {log.read_text()[-2000:]}")


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[Distribution]:
    """Debian's docker-registry (CNCF distribution 2.8), filesystem storage, deletes enabled."""
    if not os.access(DOCKER_REGISTRY, os.X_OK):
        pytest.skip(f"{DOCKER_REGISTRY} is not installed (Debian package docker-registry)")
    port = free_port()
    root = tmp_path / "registry-data"
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: ukedge-test-secret\n"
    )
    log = tmp_path / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/v2/", process, log)
        yield Distribution(f"127.0.0.1:{port}", root, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def make_image(
    store: ImageStore,
    ref: str,
    *,
    kernel: bytes | None = None,
    app: bytes | None = None,
    runtime: bytes | None = None,
    labels: dict[str, str] | None = None,
    name: str = "app",
) -> str:
    """A ukedge image of a kernel layer and one or two initrd layers; returns its digest."""
    config = ImageConfig(
        name=name,
        runtime="static",
        entrypoint=["/app/run"],
        kernel=KernelInfo(profile="minimal", version="6.1"),
        labels=labels or {},
    )
    with store.lease():
        layers = [store.put_bytes(kernel if kernel is not None else os.urandom(4096), mediatypes.KERNEL_GZIP)]
        if runtime is not None:
            layers.append(store.put_bytes(runtime, mediatypes.INITRD_GZIP))
        layers.append(store.put_bytes(app if app is not None else os.urandom(2048), mediatypes.INITRD_GZIP))
        manifest = ImageManifest(
            artifactType=mediatypes.ARTIFACT_TYPE,
            config=store.put_bytes(config.to_json(), mediatypes.CONFIG),
            layers=layers,
        )
        return store.add_manifest(manifest.to_json(), ref).digest


def blob_digests(store: ImageStore, ref: str) -> dict[str, bytes]:
    """Every blob of an image (manifest included), by digest, with its bytes."""
    image, manifest = store.manifest(ref)
    digests = [image.digest, manifest.config.digest, *(layer.digest for layer in manifest.layers)]
    return {d: store.read_blob(d) for d in digests}
