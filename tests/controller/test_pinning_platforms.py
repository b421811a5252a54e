"""Pinning a multi-platform image against a real hub: the index digest is the pin, the
revision learns the platforms, and the layers are those of the platforms it may run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.hub import RunningHub, run_hub
from kit.registry import make_image, make_index
from ukedge.controller._pinning import pin_image
from ukedge.errors import ControllerError
from ukedge.image import ImageManifest, ImageStore
from ukedge.registry import push


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    with run_hub(tmp_path / "hub", auth="off") as running:
        yield running


def _layers(store: ImageStore, digest: str) -> set[str]:
    return {
        layer.digest for layer in ImageManifest.model_validate_json(store.read_blob(digest)).layers
    }


def test_an_index_pins_to_its_digest_with_its_platforms(hub: RunningHub, tmp_path: Path) -> None:
    source = ImageStore(tmp_path / "source")
    digests = make_index(source, "app:1")
    remote = f"{hub.host}/team/app:1"
    push(source, "app:1", remote)

    pinned = pin_image(remote)
    assert pinned.reference == f"{hub.host}/team/app@{digests['index']}"
    assert pinned.platforms == ("linux/amd64", "linux/arm64/v8")
    both = _layers(source, digests["amd64"]) | _layers(source, digests["arm64"])
    assert set(pinned.layers) == both

    for names in (["arm64"], ["aarch64"], ["linux/arm64/v8"]):
        arm = pin_image(remote, names)
        assert arm.platforms == pinned.platforms  # what the image offers, whatever is asked
        assert set(arm.layers) == _layers(source, digests["arm64"])

    with pytest.raises(ControllerError, match="mips") as caught:
        pin_image(remote, ["mips"])
    assert caught.value.status == 422


def test_a_single_manifest_pins_with_its_configs_platform(hub: RunningHub, tmp_path: Path) -> None:
    source = ImageStore(tmp_path / "source")
    make_image(source, "arm:1", architecture="arm64")
    remote = f"{hub.host}/team/arm:1"
    push(source, "arm:1", remote)
    assert pin_image(remote).platforms == ("linux/arm64",)
    assert pin_image(remote, ["aarch64"]).platforms == ("linux/arm64",)
    with pytest.raises(ControllerError, match="linux/arm64 only") as caught:
        pin_image(remote, ["x86_64"])
    assert caught.value.status == 422
