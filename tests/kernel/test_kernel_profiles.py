from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from ukedge.errors import KernelError
from ukedge.kernel import kernel_key, load_profile, parse_profile, profiles


def _lines(name: str) -> list[str]:
    text = resources.files("ukedge.kernel").joinpath("profiles", f"{name}.config").read_text()
    return text.splitlines()


def test_minimal_is_shipped() -> None:
    assert "minimal" in profiles()


@pytest.mark.parametrize("name", profiles())
def test_every_option_has_its_own_comment(name: str) -> None:
    lines = _lines(name)
    profile = load_profile(name)
    assert profile.options, "a profile with no options"
    for number, line in enumerate(lines):
        is_option = line.startswith("CONFIG_") or (
            line.startswith("# CONFIG_") and line.endswith(" is not set")
        )
        if not is_option:
            continue
        above = lines[number - 1] if number else ""
        is_comment = above.startswith("# ") and not above.startswith("# CONFIG_")
        assert is_comment, f"{name}.config line {number + 1} ({line}) has no comment above it"


@pytest.mark.parametrize("name", profiles())
def test_profile_essentials(name: str) -> None:
    opts = load_profile(name).options
    for option in (
        "CONFIG_PVH",
        "CONFIG_BLK_DEV_INITRD",
        "CONFIG_DEVTMPFS",
        "CONFIG_VIRTIO_PCI",
        "CONFIG_VIRTIO_MMIO",
        "CONFIG_VIRTIO_NET",
        "CONFIG_VIRTIO_CONSOLE",
        "CONFIG_SERIAL_8250_CONSOLE",
        "CONFIG_INET",
    ):
        assert opts.get(option) == "y", option
    assert "CONFIG_MODULES" not in opts or opts["CONFIG_MODULES"] == "n"
    assert "console=ttyS0" in load_profile(name).cmdline.split()


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(KernelError, match=r"known profiles: .*minimal"):
        load_profile("no-such-profile")


def test_parse_rejects_garbage_and_duplicates() -> None:
    with pytest.raises(KernelError, match="line 2: not a kconfig line"):
        parse_profile("x", "# ukedge.cmdline: console=ttyS0\nCONFIG_A y\n")
    with pytest.raises(KernelError, match="CONFIG_A is set twice"):
        parse_profile("x", "# ukedge.cmdline: c\nCONFIG_A=y\n# CONFIG_A is not set\n")
    with pytest.raises(KernelError, match=r"no '\# ukedge\.cmdline:"):
        parse_profile("x", "CONFIG_A=y\n")


def test_key_follows_effective_options_only(tmp_path: Path) -> None:
    tarball = tmp_path / "linux.tar.xz"
    tarball.write_bytes(b"source")
    base = "# ukedge.cmdline: console=ttyS0\n# why\nCONFIG_A=y\n"
    key = kernel_key(parse_profile("p", base), tarball)
    reworded = kernel_key(parse_profile("p", base.replace("# why", "# because")), tarball)
    assert reworded == key
    changed = kernel_key(parse_profile("p", base + "# more\nCONFIG_B=y\n"), tarball)
    assert changed != key
    off = base.replace("CONFIG_A=y", "# CONFIG_A is not set")
    disabled = kernel_key(parse_profile("p", off), tarball)
    assert disabled != key
    tarball.write_bytes(b"other source")
    assert kernel_key(parse_profile("p", base), tarball) != key
