"""OCI platform names against the machine names nodes report."""

from __future__ import annotations

import pytest

from ukedge.errors import ImageError
from ukedge.image import (
    Descriptor,
    ImageConfig,
    ImageIndex,
    KernelInfo,
    Platform,
    parse_platform,
    parse_platforms,
)


@pytest.mark.parametrize(
    ("text", "shown", "machine"),
    [
        ("linux/amd64", "linux/amd64", "x86_64"),
        ("linux/arm64", "linux/arm64", "aarch64"),
        ("linux/arm64/v8", "linux/arm64/v8", "aarch64"),
        ("arm64", "linux/arm64", "aarch64"),
        (" linux/amd64 ", "linux/amd64", "x86_64"),
    ],
)
def test_parse_platform(text: str, shown: str, machine: str) -> None:
    platform = parse_platform(text)
    assert str(platform) == shown
    assert platform.machine == machine


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("linux/x86_64", "OCI calls x86_64 'amd64'"),
        ("linux/aarch64", "OCI calls aarch64 'arm64'"),
        ("linux/riscv64", "unsupported architecture 'riscv64'"),
        ("windows/amd64", "Linux guests"),
        ("linux/", "not OS/ARCH"),
        ("linux/arm64/v8/x", "not OS/ARCH"),
    ],
)
def test_bad_platform_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ImageError, match=says):
        parse_platform(text)


def test_platform_lists_keep_order_and_refuse_repeats() -> None:
    found = parse_platforms("linux/arm64,linux/amd64")
    assert [str(p) for p in found] == ["linux/arm64", "linux/amd64"]
    with pytest.raises(ImageError, match="twice"):
        parse_platforms("linux/arm64,linux/arm64/v8")
    with pytest.raises(ImageError, match="empty entry"):
        parse_platforms("linux/amd64,")


def test_arm64_variant_defaults_to_v8_when_matching() -> None:
    image = Platform(os="linux", architecture="arm64", variant="v8")
    assert image.matches(parse_platform("linux/arm64"))
    assert parse_platform("linux/arm64").matches(image)
    assert not image.matches(Platform(os="linux", architecture="arm64", variant="v7"))
    assert not image.matches(parse_platform("linux/amd64"))


def test_machine_names_map_to_platforms() -> None:
    assert str(Platform.of_machine("x86_64")) == "linux/amd64"
    assert str(Platform.of_machine("aarch64")) == "linux/arm64"
    with pytest.raises(ImageError, match="not supported"):
        Platform.of_machine("s390x")


def test_index_entry_platform_round_trips_with_unknown_fields() -> None:
    raw = (
        b'{"manifests":[{"digest":"sha256:' + b"a" * 64 + b'","mediaType":'
        b'"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"arm64",'
        b'"os":"linux","os.features":["x"],"os.version":"1","variant":"v8"},"size":1}],'
        b'"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}'
    )
    index = ImageIndex.model_validate_json(raw)
    entry = index.manifests[0]
    assert entry.platform is not None and str(entry.platform) == "linux/arm64/v8"
    assert entry.platform.os_version == "1"
    assert index.to_json() == raw


def test_descriptor_without_platform_serialises_as_before() -> None:
    plain = Descriptor(media_type="x", digest="sha256:" + "b" * 64, size=2)
    assert b"platform" not in plain.to_json()


def test_image_config_platform() -> None:
    config = ImageConfig(
        name="a",
        runtime="static",
        entrypoint=["/a"],
        kernel=KernelInfo(profile="minimal", version="6.1"),
        architecture="arm64",
    )
    assert str(config.platform) == "linux/arm64"
    assert b"variant" not in config.to_json()
    with pytest.raises(ValueError, match="architecture"):
        ImageConfig.model_validate({**config.model_dump(), "architecture": "s390x"})
