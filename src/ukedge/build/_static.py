"""The ``static`` runtime: one statically linked x86-64 executable, compiled here or prebuilt.

The guest has no dynamic loader and no libc of its own, so a binary that names a program
interpreter (``PT_INTERP``) or shared libraries (``DT_NEEDED``) would fail with a bare "not
found" at boot; the builder refuses it up front and says how to fix it. Sources are compiled with
musl (smaller, no NSS surprises) when ``musl-gcc`` is installed, else glibc's ``gcc -static``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from ukedge.build._elf import NotElfError, read_elf
from ukedge.errors import BuildError, UkfileError

__all__ = ["check_static_binary", "compile_static", "find_compiler"]

log = logging.getLogger(__name__)

_BASE_FLAGS = ["-static", "-Os", "-s"]


def find_compiler() -> list[str]:
    """The C compiler command for static binaries: musl-gcc, else gcc."""
    for name in ("musl-gcc", "gcc", "cc"):
        path = shutil.which(name)
        if path:
            return [path]
    raise BuildError(
        "no C compiler found to build the static runtime's sources; install musl-tools "
        "(musl-gcc) or build-essential (gcc), or give a prebuilt binary with 'binary ='"
    )


def compile_static(
    context: Path,
    sources: list[str],
    output: Path,
    *,
    cflags: list[str],
    ldflags: list[str],
    ukfile: str,
) -> None:
    """Compile ``sources`` (relative to ``context``) into one static executable ``output``."""
    for index, source in enumerate(sources):
        if not (context / source).is_file():
            raise UkfileError(
                ukfile, f"static.sources[{index}]", f"{source} does not exist in {context}"
            )
    cmd = [*find_compiler(), *_BASE_FLAGS, *cflags, "-o", str(output), *sources, *ldflags]
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
    check_static_binary(output, ukfile=ukfile, field="static.sources", shown=output.name)


def check_static_binary(path: Path, *, ukfile: str, field: str, shown: str) -> None:
    """Refuse anything the guest cannot exec without a loader."""
    if not path.is_file():
        raise UkfileError(ukfile, field, f"{shown} does not exist")
    try:
        info = read_elf(path)
    except NotElfError as exc:
        raise UkfileError(
            ukfile,
            field,
            f"{shown} is not an x86-64 executable: {str(exc).removeprefix(f'{path}: ')}",
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
