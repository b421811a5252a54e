"""The ELF reader against binaries the host toolchain really produces."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ukedge.build import NotElfError, read_elf
from ukedge.build._elf import elf_machine

_C = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'


def _cc(tmp_path: Path, name: str, compiler: str, *flags: str) -> Path:
    if shutil.which(compiler) is None:
        pytest.skip(f"needs {compiler}")
    src = tmp_path / "hello.c"
    src.write_text(_C)
    out = tmp_path / name
    subprocess.run([compiler, *flags, "-o", str(out), str(src)], check=True)
    return out


@pytest.mark.parametrize(
    ("compiler", "flags"),
    [("musl-gcc", ("-static",)), ("gcc", ("-static",)), ("gcc", ("-static-pie",))],
)
def test_static_binaries_are_static(tmp_path: Path, compiler: str, flags: tuple[str, ...]) -> None:
    info = read_elf(_cc(tmp_path, "hello", compiler, *flags))
    assert info.is_static
    assert info.interpreter is None
    assert info.needed == ()


def test_dynamic_binary_names_loader_and_libc(tmp_path: Path) -> None:
    info = read_elf(_cc(tmp_path, "hello", "gcc"))
    assert not info.is_static
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert info.needed == ("libc.so.6",)


def test_needed_matches_ldd_for_python() -> None:
    python = Path("/usr/bin/python3.11")
    if not python.exists():
        pytest.skip("needs Debian's python3.11")
    ldd = subprocess.run(["ldd", str(python)], capture_output=True, text=True, check=True).stdout
    from_ldd = {line.split()[0] for line in ldd.splitlines() if "=>" in line}
    assert set(read_elf(python).needed) == from_ldd


def test_shared_library_has_soname() -> None:
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    info = read_elf(libc)
    assert info.soname == "libc.so.6"
    assert info.type == "dyn"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"#!/bin/sh\necho hi\n", "no ELF magic"),
        (b"\x7fELF", "truncated"),
        (b"\x7fELF\x01\x01" + b"\0" * 60, "64-bit little-endian"),
        (
            b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\xb7\x00" + b"\0" * 44,
            "an aarch64 binary, but the image is for x86_64",
        ),
    ],
)
def test_not_an_x86_64_elf(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "thing"
    path.write_bytes(content)
    with pytest.raises(NotElfError, match=problem):
        read_elf(path)


def test_machine_is_read_and_checked_per_architecture(tmp_path: Path) -> None:
    x86 = _cc(tmp_path, "hello", "gcc", "-static")
    assert elf_machine(x86) == "x86_64"
    with pytest.raises(NotElfError, match=r"an x86_64 binary, but the image is for aarch64"):
        read_elf(x86, "aarch64")
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    assert elf_machine(script) is None


def test_a_cross_compiled_arm64_binary_is_static_aarch64(tmp_path: Path) -> None:
    arm64 = _cc(tmp_path, "hello-arm64", "aarch64-linux-gnu-gcc", "-static")
    assert elf_machine(arm64) == "aarch64"
    assert read_elf(arm64, "aarch64").is_static
    with pytest.raises(NotElfError, match="an aarch64 binary, but the image is for x86_64"):
        read_elf(arm64)
