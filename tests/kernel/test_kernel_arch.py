"""Per-architecture kernel profiles: the arm64 fragment merged after the base, its cache key,
and the arm64 build itself (cross-compiled once per machine, marked ``kernel``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from ukedge.errors import KernelError
from ukedge.image import parse_platform
from ukedge.kernel import ensure_kernel, kernel_key, load_profile, merge_profiles, parse_profile
from ukedge.kernel import profiles as shipped
from ukedge.kernel._build import _verify_config


def test_arch_fragments_are_not_profiles_of_their_own() -> None:
    names = shipped()
    assert "minimal" in names
    assert not any("." in name for name in names)


def test_arm64_fragment_overrides_the_base_and_replaces_its_cmdline() -> None:
    amd64 = load_profile("minimal")
    arm64 = load_profile("minimal", "arm64")
    assert amd64.architecture == "amd64" and arm64.architecture == "arm64"
    assert amd64.options["CONFIG_PVH"] == "y" and arm64.options["CONFIG_PVH"] == "n"
    assert arm64.options["CONFIG_SERIAL_AMBA_PL011_CONSOLE"] == "y"
    assert "CONFIG_SERIAL_AMBA_PL011" not in amd64.options
    # Every arch-neutral option of the base is kept unless the fragment names it.
    fragment = parse_profile("minimal", _fragment("minimal.arm64"), base=False)
    for option, value in amd64.options.items():
        if option not in fragment.options:
            assert arm64.options[option] == value
    assert "console=ttyAMA0" in arm64.cmdline.split()
    assert "console=ttyS0" not in arm64.cmdline.split()
    assert "tsc" not in arm64.cmdline and "lapic" not in arm64.cmdline


def test_an_arch_fragment_without_cmdline_keeps_the_base_one() -> None:
    base = parse_profile("p", "# ukedge.cmdline: console=ttyS0\nCONFIG_A=y\nCONFIG_B=y\n")
    arch = parse_profile("p", "# CONFIG_A is not set\nCONFIG_C=y\n", base=False)
    merged = merge_profiles(base, arch, "arm64")
    assert merged.cmdline == "console=ttyS0"
    assert merged.options == {"CONFIG_A": "n", "CONFIG_B": "y", "CONFIG_C": "y"}
    with pytest.raises(KernelError, match=r"no '# ukedge\.cmdline"):
        parse_profile("p", "CONFIG_C=y\n")  # a base fragment still needs one


def test_every_arm64_option_has_its_own_comment() -> None:
    lines = _fragment("minimal.arm64").splitlines()
    for number, line in enumerate(lines):
        is_option = line.startswith("CONFIG_") or (
            line.startswith("# CONFIG_") and line.endswith(" is not set")
        )
        if is_option:
            above = lines[number - 1]
            assert above.startswith("# ") and not above.startswith("# CONFIG_"), line


def test_the_architecture_changes_the_key_and_amd64_keeps_its_own(tmp_path: Path) -> None:
    tarball = tmp_path / "linux.tar.xz"
    tarball.write_bytes(b"source")
    text = "# ukedge.cmdline: c\nCONFIG_A=y\n"
    amd64 = parse_profile("p", text)
    arm64 = merge_profiles(amd64, parse_profile("p", "", base=False), "arm64")
    assert arm64.options == amd64.options  # same effective options, other architecture
    assert kernel_key(amd64, tarball) != kernel_key(arm64, tarball)


def test_verify_config_accepts_options_arm64_does_not_have(tmp_path: Path) -> None:
    """x86-only options the fragment turns off are absent from an arm64 .config: that is 'n'."""
    config = tmp_path / "config"
    config.write_text("CONFIG_SERIAL_AMBA_PL011=y\n")
    profile = merge_profiles(
        parse_profile("p", "# ukedge.cmdline: c\nCONFIG_PVH=y\n"),
        parse_profile("p", "# CONFIG_PVH is not set\nCONFIG_SERIAL_AMBA_PL011=y\n", base=False),
        "arm64",
    )
    _verify_config(profile, config, tmp_path / "log")


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(Exception, match="riscv64"):
        ensure_kernel("minimal", platform=parse_platform("linux/riscv64"))


@pytest.mark.foreign_arch
def test_arm64_kernel_is_an_arm64_image() -> None:
    kernel = ensure_kernel("minimal", platform=parse_platform("linux/arm64"))
    assert kernel.architecture == "arm64"
    assert kernel.boot_image == kernel.bzimage and kernel.boot_image.name == "Image"
    header = kernel.boot_image.read_bytes()[:64]
    assert header[56:60] == b"ARM\x64", "no arm64 Image magic: QEMU's virt cannot boot it"
    elf = kernel.vmlinux.read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    config = (kernel.vmlinux.parent / "config").read_text()
    assert "CONFIG_ARM64=y" in config and "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y" in config
    assert kernel != ensure_kernel("minimal", platform=parse_platform("linux/amd64"))


def _fragment(name: str) -> str:
    return resources.files("ukedge.kernel").joinpath("profiles", f"{name}.config").read_text()
