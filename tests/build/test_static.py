"""The static runtime: compiling C sources and refusing what cannot run without a loader."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ukedge.build import read_elf
from ukedge.build._static import check_static_binary, compile_static
from ukedge.errors import BuildError, UkfileError

_HELLO = '#include <stdio.h>\nint main(void) { puts("hi"); return 7; }\n'


def test_compile_static_produces_a_runnable_static_binary(tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(_HELLO)
    out = tmp_path / "hello"
    compile_static(tmp_path, ["hello.c"], out, cflags=[], ldflags=[], ukfile="Ukfile")
    assert read_elf(out).is_static
    assert subprocess.run([str(out)], capture_output=True).returncode == 7


def test_compile_is_reproducible(tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(_HELLO)
    compile_static(tmp_path, ["hello.c"], tmp_path / "a", cflags=[], ldflags=[], ukfile="U")
    compile_static(tmp_path, ["hello.c"], tmp_path / "b", cflags=[], ldflags=[], ukfile="U")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_missing_source_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(UkfileError) as info:
        compile_static(tmp_path, ["nope.c"], tmp_path / "x", cflags=[], ldflags=[], ukfile="U")
    assert info.value.field == "static.sources[0]"
    assert "nope.c does not exist" in info.value.problem


def test_compile_error_shows_compiler_output(tmp_path: Path) -> None:
    (tmp_path / "bad.c").write_text("int main(void) { return undeclared; }\n")
    with pytest.raises(BuildError, match="undeclared"):
        compile_static(tmp_path, ["bad.c"], tmp_path / "x", cflags=[], ldflags=[], ukfile="U")
    assert not (tmp_path / "x").exists()


def test_dynamic_binary_is_refused_with_what_it_needs(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    (tmp_path / "hello.c").write_text(_HELLO)
    subprocess.run(["gcc", "-o", str(tmp_path / "dyn"), str(tmp_path / "hello.c")], check=True)
    with pytest.raises(UkfileError) as info:
        check_static_binary(tmp_path / "dyn", ukfile="U", field="static.binary", shown="dyn")
    assert info.value.field == "static.binary"
    assert "dynamically linked" in info.value.problem
    assert "/lib64/ld-linux-x86-64.so.2" in info.value.problem
    assert "libc.so.6" in info.value.problem
    assert "-static" in info.value.problem


def test_script_is_refused_as_not_an_executable(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(UkfileError, match="not an executable for x86_64"):
        check_static_binary(script, ukfile="U", field="static.binary", shown="run.sh")


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(UkfileError, match="bin/app does not exist"):
        check_static_binary(tmp_path / "app", ukfile="U", field="static.binary", shown="bin/app")
