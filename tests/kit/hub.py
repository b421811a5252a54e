"""Hub test helpers: a real hub on a free port (uvicorn in a thread), as a fixture or a context
manager, ``ukedge hub serve`` as a child process, and helpers that push to a hub over its API.

The one in-process hub server of the tests: the hub, registry-client and host tests all use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kit.net import free_port
from ukedge.hub import Hub, HubSettings, create_app, server_config


@dataclass
class RunningHub:
    url: str
    settings: HubSettings
    hub: Hub
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry name ``ukedge push`` and ``RegistryClient`` take."""
        return self.url.removeprefix("http://")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_hub(data: Path, **overrides: Any) -> RunningHub:
    port = free_port()
    values: dict[str, Any] = {
        "data_dir": data,
        "addr": f"127.0.0.1:{port}",
        "fsync": False,
        "access_log": False,
    }
    values.update(overrides)
    settings = HubSettings(**values)
    hub = Hub(settings)
    app = create_app(settings, hub)
    config = server_config(settings, app, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("hub did not start")
        time.sleep(0.02)
    return RunningHub(f"http://127.0.0.1:{port}", settings, hub, server, thread)


@contextlib.contextmanager
def run_hub(data: Path, **overrides: Any) -> Iterator[RunningHub]:
    """:func:`start_hub` for a ``with`` block: the hub stops when the block ends."""
    running = start_hub(data, **overrides)
    try:
        yield running
    finally:
        running.stop()


def start_hub_process(
    data: Path,
    port: int,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """``ukedge hub serve`` as a child process (what a crash test kills), once it answers."""
    exe = Path(sys.executable).with_name("ukedge")
    proc = subprocess.Popen(
        [str(exe), "hub", "serve", "--addr", f"127.0.0.1:{port}", "--data", str(data), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "hub exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("hub did not start")


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., RunningHub]]:
    started: list[RunningHub] = []

    def make(**overrides: Any) -> RunningHub:
        running = start_hub(tmp_path / f"hub{len(started)}", **overrides)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def hub(hub_factory: Callable[..., RunningHub]) -> RunningHub:
    return hub_factory()


@pytest.fixture
def client(hub: RunningHub) -> Iterator[httpx.Client]:
    with hub.client() as c:
        yield c


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha(data)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return digest


def image_manifest(
    client: httpx.Client,
    repo: str,
    layers: list[bytes],
    *,
    config: bytes = b'{"architecture":"amd64","os":"linux"}',
    artifact_type: str | None = None,
    subject: dict[str, Any] | None = None,
) -> bytes:
    config_digest = push_blob(client, repo, config)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": push_blob(client, repo, layer),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject:
        doc["subject"] = subject
    return json.dumps(doc).encode()


def push_image(
    client: httpx.Client, repo: str, tag: str, layers: list[bytes], **kwargs: Any
) -> tuple[str, bytes]:
    manifest = image_manifest(client, repo, layers, **kwargs)
    r = client.put(
        f"/v2/{repo}/manifests/{tag}",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"], manifest
