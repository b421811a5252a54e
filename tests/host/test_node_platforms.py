"""A node of one platform and multi-platform images from a real hub: what it pulls for a run,
what its cache lists, and that an image is in use through its platform manifest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.hub import RunningHub, hub, hub_factory
from kit.registry import make_index
from ukedge.errors import ImageInUseError
from ukedge.host import LocalNode
from ukedge.host._wiring import NodeLayout, open_node
from ukedge.image import ImageStore, parse_platform
from ukedge.registry import push

__all__ = ["hub", "hub_factory"]  # fixtures, re-exported for pytest

ARM64 = parse_platform("linux/arm64")
AMD64 = parse_platform("linux/amd64")


@pytest.fixture
def arm_node(tmp_path: Path) -> Iterator[LocalNode]:
    node = open_node(NodeLayout.data_dir(tmp_path / "node"), platform=ARM64)
    yield node
    node.close()
    node.manager.close()


def test_a_node_pulls_its_platform_and_a_run_of_another_pulls_that_one(
    hub: RunningHub, arm_node: LocalNode, tmp_path: Path
) -> None:
    source = ImageStore(tmp_path / "source")
    digests = make_index(source, "app:1")
    remote = f"{hub.url.removeprefix('http://')}/team/app:1"
    push(source, "app:1", remote)

    summary = arm_node.pull(remote)  # the node's platform: arm64
    assert summary.digest == digests["index"] and summary.platforms == ["linux/arm64/v8"]
    store = arm_node.cache.store
    assert store.has_blob(digests["arm64"]) and not store.has_blob(digests["amd64"])
    inspected = arm_node.inspect_image(remote)
    assert (
        inspected["digest"] == digests["arm64"] and inspected["config"]["architecture"] == "arm64"
    )
    assert [(p["platform"], p["present"]) for p in inspected["platforms"]] == [
        ("linux/amd64", False),
        ("linux/arm64/v8", True),
    ]

    # Here already for the node's platform: nothing to pull. Asked for amd64: it is pulled.
    assert arm_node._local_or_pull(remote) == remote
    assert not store.has_blob(digests["amd64"])
    assert arm_node._local_or_pull(remote, AMD64) == remote
    assert store.has_blob(digests["amd64"])
    assert [r.platforms for r in arm_node.images()] == [["linux/amd64", "linux/arm64/v8"]]
    inspected = arm_node.inspect_image(remote, "linux/amd64")
    assert inspected["digest"] == digests["amd64"] and inspected["index"] == digests["index"]


def test_an_index_is_in_use_through_the_platform_manifest_an_instance_records(
    hub: RunningHub, arm_node: LocalNode, tmp_path: Path
) -> None:
    source = ImageStore(tmp_path / "source")
    digests = make_index(source, "app:1")
    remote = f"{hub.url.removeprefix('http://')}/team/app:1"
    push(source, "app:1", remote)
    arm_node.pull(remote)
    cache = arm_node.cache
    cache.in_use = lambda: [digests["arm64"]]  # an instance booted the arm64 manifest
    [row] = cache.images()
    assert row.in_use
    with pytest.raises(ImageInUseError, match="used by 1 instance"):
        cache.remove(remote)
    assert cache.prune().removed == []
    cache.in_use = lambda: []
    cache.remove(remote)
    assert not cache.store.has_blob(digests["arm64"])
