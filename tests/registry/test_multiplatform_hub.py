"""Multi-platform images through the hub over real HTTP: an index pushed whole, and each node
pulling only its own platform (the bytes it receives are measured against that platform's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kit.hub import RunningHub, run_hub
from kit.registry import make_index
from ukedge.image import ImageManifest, ImageStore, parse_platform
from ukedge.registry import RegistryClient, pull, push

_KERNEL = 1 << 20
_APP = 256 << 10


class _ReceivingTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting the body bytes of every response as they arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        inner = response.stream
        transport = self

        class _Counting(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for chunk in inner:  # type: ignore[union-attr]
                    transport.received += len(chunk)
                    yield chunk

            def close(self) -> None:
                inner.close()  # type: ignore[union-attr]

        response.stream = _Counting()
        return response


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    with run_hub(tmp_path / "hub", auth="off") as running:
        yield running


def _platform_bytes(store: ImageStore, digest: str) -> tuple[set[str], int]:
    """A platform's blobs (manifest, config, layers) and their total size."""
    manifest = ImageManifest.model_validate_json(store.read_blob(digest))
    blobs = {digest: len(store.read_blob(digest))}
    for desc in [manifest.config, *manifest.layers]:
        blobs[desc.digest] = desc.size
    return set(blobs), sum(blobs.values())


def test_each_node_pulls_only_its_platform(hub: RunningHub, tmp_path: Path) -> None:
    src = ImageStore(tmp_path / "src")
    digests = make_index(src, "app:multi", kernel=_KERNEL, app=_APP)
    remote = f"{hub.host}/team/app:1"
    with RegistryClient(hub.host, state_dir=tmp_path / "state") as client:
        assert push(src, "app:multi", remote, client=client) == digests["index"]
    # The hub's overview and web page say which platforms the index offers.
    [repo] = httpx.get(f"{hub.url}/api/repositories", timeout=30).json()
    assert [(t["tag"], t["platforms"]) for t in repo["tags"]] == [
        ("1", ["linux/amd64", "linux/arm64/v8"])
    ]
    assert "index: linux/amd64, linux/arm64/v8" in httpx.get(f"{hub.url}/", timeout=30).text

    fetched: dict[str, set[str]] = {}
    for arch in ("amd64", "arm64"):
        node = ImageStore(tmp_path / arch)
        transport = _ReceivingTransport()
        with RegistryClient(hub.host, state_dir=tmp_path / arch, transport=transport) as client:
            image = pull(node, remote, client=client, platform=f"linux/{arch}")
        assert image.digest == digests["index"]
        own, own_bytes = _platform_bytes(src, digests[arch])
        held = {"sha256:" + p.name for p in node.blobs_dir.iterdir()}
        assert held == own | {digests["index"]}
        for digest in held:
            node.verify_blob(digest)
        chosen, manifest = node.manifest(remote, parse_platform(f"linux/{arch}"))
        assert chosen.digest == digests[arch]
        assert node.config(manifest).architecture == arch
        # Target: what moves is this platform's blobs, plus the index (< 1 KB), within 5 %.
        ratio = transport.received / own_bytes
        print(f"linux/{arch}: received {transport.received} bytes for {own_bytes} ({ratio:.4f}x)")
        assert transport.received <= 1.05 * own_bytes
        fetched[arch] = own
    assert not (fetched["amd64"] & fetched["arm64"])  # different blobs for each node


def test_pinned_index_is_served_from_the_store_and_another_platform_adds_to_it(
    hub: RunningHub, tmp_path: Path
) -> None:
    src = ImageStore(tmp_path / "src")
    digests = make_index(src, "app:multi")
    remote = f"{hub.host}/team/app:1"
    pinned = f"{hub.host}/team/app@{digests['index']}"
    node = ImageStore(tmp_path / "node")
    with RegistryClient(hub.host, state_dir=tmp_path / "state") as client:
        push(src, "app:multi", remote, client=client)
        pull(node, pinned, client=client, platform="linux/amd64")
        assert not node.has_blob(digests["arm64"])
        pull(node, remote, client=client, platform="linux/arm64")
    assert node.manifest(pinned, parse_platform("linux/amd64"))[0].digest == digests["amd64"]
    assert node.manifest(remote, parse_platform("linux/arm64"))[0].digest == digests["arm64"]
    # Pinned and whole here: no registry needed (the hub is gone).
    hub.stop()
    again = ImageStore(tmp_path / "node")
    with RegistryClient(hub.host, state_dir=tmp_path / "state", retries=0) as client:
        image = pull(again, pinned, client=client, platform="linux/amd64")
    assert image.digest == digests["index"]
