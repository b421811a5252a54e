"""The ``static`` runtime: one statically linked executable of the image's architecture,
compiled here (cross-compiled for another architecture) or prebuilt.

The guest has no dynamic loader and no libc of its own, so a binary that names a program
interpreter (``PT_INTERP``) or shared libraries (``DT_NEEDED``) would fail with a bare "not
found" at boot, and one of another architecture with "Exec format error"; the builder refuses
both up front and says how to fix them. Sources are compiled with musl (smaller, no NSS
surprises) when ``musl-gcc`` is installed, else glibc's ``gcc -static``; for another
architecture with Debian's cross gcc (:mod:`ukedge.build._toolchain`).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from ukedge.build._elf import NotElfError, read_elf
from ukedge.build._toolchain import c_compiler
from ukedge.errors import BuildError, UkfileError
from ukedge.image import Platform, host_platform

__all__ = ["check_static_binary", "compile_static", "find_compiler"]

log = logging.getLogger(__name__)

_BASE_FLAGS = ["-static", "-Os", "-s"]


def find_compiler(platform: Platform | None = None) -> list[str]:
    """The C compiler command for static binaries of ``platform`` (default: this host's)."""
    target = platform or host_platform()
    return [c_compiler(target, what="the static runtime's sources (or give 'binary =')")]


def compile_static(
    context: Path,
    sources: list[str],
    output: Path,
    *,
    cflags: list[str],
    ldflags: list[str],
    ukfile: str,
    platform: Platform | None = None,
) -> None:
    """Compile ``sources`` (relative to ``context``) into one static executable ``output`` for
    ``platform`` (default: this host's)."""
    target = platform or host_platform()
    for index, source in enumerate(sources):
        if not (context / source).is_file():
            raise UkfileError(
                ukfile, f"static.sources[{index}]", f"{source} does not exist in {context}"
            )
    cmd = [*find_compiler(target), *_BASE_FLAGS, *cflags, "-o", str(output), *sources, *ldflags]
    log.debug("compiling: %s", cmd)
    # Relative source names and a fixed locale keep the output (and its messages) reproducible.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    if "SOURCE_DATE_EPOCH" in os.environ:
        env["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    proc = subprocess.run(cmd, cwd=context, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        detail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        raise BuildError(
            f"compiling {', '.join(sources)} failed ({Path(cmd[0]).name} exited with "
            f"{proc.returncode}):\n{detail}"
        )
    check_static_binary(
        output, ukfile=ukfile, field="static.sources", shown=output.name, platform=target
    )


def check_static_binary(
    path: Path, *, ukfile: str, field: str, shown: str, platform: Platform | None = None
) -> None:
    """Refuse anything a guest of ``platform`` (default: this host's) cannot exec without a
    loader, or cannot exec at all (another architecture)."""
    machine = (platform or host_platform()).machine
    if not path.is_file():
        raise UkfileError(ukfile, field, f"{shown} does not exist")
    try:
        info = read_elf(path, machine)
    except NotElfError as exc:
        raise UkfileError(
            ukfile,
            field,
            f"{shown} is not an executable for {machine}: {str(exc).removeprefix(f'{path}: ')}",
        ) from exc
    if info.type not in ("exec", "dyn"):
        raise UkfileError(ukfile, field, f"{shown} is an ELF file but not an executable")
    if not info.is_static:
        needs = [info.interpreter] if info.interpreter else []
        needs += list(info.needed)
        raise UkfileError(
            ukfile,
            field,
            f"{shown} is dynamically linked (it needs {', '.join(needs)}), but the static runtime "
            "has no loader or shared libraries: link it with -static (e.g. musl-gcc -static)",
        )
    if not os.access(path, os.X_OK):
        log.info("%s is not marked executable; the layer marks it 0755", path)
