from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ukedge.errors import KernelError
from ukedge.kernel import _build, ensure_kernel, list_kernels, parse_profile
from ukedge.kernel._build import _verify_config
from ukedge.kernel._runner import Runner


def _notes(elf: bytes) -> list[tuple[bytes, int]]:
    """(owner, type) of every note in the ELF's PT_NOTE segments."""
    assert elf[:4] == b"\x7fELF" and elf[4] == 2  # 64-bit
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", elf, 32)[0],
        *struct.unpack_from("<HH", elf, 54),
    )
    found = []
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos < end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            found.append((name, ntype))
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return found


@pytest.mark.kernel
def test_built_kernel_is_cached_and_bootable_by_pvh(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = ensure_kernel("minimal")  # built by `make kernel` before the suite runs

    def build_again(*args: object) -> None:
        raise AssertionError("a cached kernel was built again")

    monkeypatch.setattr(_build, "_build", build_again)
    again = ensure_kernel("minimal")
    assert again == kernel
    elf = kernel.vmlinux.read_bytes()
    assert (b"Xen", 18) in _notes(elf), "no XEN_ELFNOTE_PHYS32_ENTRY: QEMU cannot boot it via PVH"
    assert b".symtab" not in elf, "vmlinux should be stripped"
    assert kernel.bzimage.read_bytes()[0x202:0x206] == b"HdrS"
    assert kernel.version.startswith("6.1.")
    assert "console=ttyS0" in kernel.cmdline.split()
    assert kernel in list_kernels()
    config = (kernel.vmlinux.parent / "config").read_text()
    assert "CONFIG_PVH=y" in config and "CONFIG_MODULES=y" not in config


def test_verify_config_names_dropped_options(tmp_path: Path) -> None:
    profile = parse_profile(
        "p", "# ukedge.cmdline: c\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_N=64\n"
    )
    config = tmp_path / ".config"
    config.write_text("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_N=32\n")
    with pytest.raises(KernelError) as info:
        _verify_config(profile, config, tmp_path / "build.log")
    message = str(info.value)
    assert "CONFIG_B (wanted y, got n)" in message
    assert "CONFIG_C (wanted n, got y)" in message
    assert "CONFIG_N (wanted 64, got 32)" in message
    assert "CONFIG_A" not in message
    assert str(tmp_path / "build.log") in message
    config.write_text("CONFIG_A=y\nCONFIG_B=y\nCONFIG_N=64\n")
    _verify_config(profile, config, tmp_path / "build.log")


def test_failed_step_names_log_and_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "build.log"
    with log_path.open("w") as logf:
        runner = Runner(logf, log_path, {"PATH": "/usr/bin:/bin"}, tmp_path)
        seen: list[tuple[int, int | None]] = []
        steps = runner.run(
            ["sh", "-c", "echo '  CC      a.o'; echo '  CC      b.o'"],
            progress=lambda done, total: seen.append((done, total)),
            total=10,
        )
        assert steps == 2 and seen == [(1, 10), (2, 10)]
        with pytest.raises(KernelError) as info:
            runner.run(["sh", "-c", "echo first; echo 'error: boom' >&2; exit 3"])
    message = str(info.value)
    assert "exit code 3" in message and str(log_path) in message and "error: boom" in message
    assert "error: boom" in log_path.read_text()
