"""Compiling the guest init (``init.c``) once per source and compiler, and putting it into a
runtime layer.

The binary is static (musl when ``musl-gcc`` is installed, else glibc's ``gcc -static``; for
another architecture Debian's cross gcc, e.g. ``aarch64-linux-gnu-gcc``), size optimised and
stripped; it is cached under ``cache_dir()/init/<hash>/init`` where the hash covers the
source, the compiler's identity (which names its target) and the flags, so a changed source
or compiler gives a new binary and an unchanged one is reused at once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from ukedge import paths
from ukedge.build._toolchain import c_compiler
from ukedge.errors import BuildError
from ukedge.guest import CpioArchive
from ukedge.image import Platform, host_platform

__all__ = ["add_platform", "compiler", "ensure_init", "init_source"]

log = logging.getLogger(__name__)

_FLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-fno-asynchronous-unwind-tables")


def init_source() -> bytes:
    return resources.files("ukedge.build.guest").joinpath("init.c").read_bytes()


def compiler(platform: Platform | None = None) -> str:
    """``musl-gcc`` when present (a 60 KB init), else ``gcc`` (glibc static, ~750 KB); the
    cross gcc for another architecture than the host's."""
    return c_compiler(platform or host_platform(), what="the guest init")


def _compiler_id(cc: str) -> bytes:
    try:
        proc = subprocess.run([cc, "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot run the C compiler {cc}: {exc}") from exc
    return cc.encode() + b"\0" + proc.stdout


def ensure_init(platform: Platform | None = None) -> Path:
    """The compiled init for this source and compiler, for ``platform`` (default: this
    host's); compiled on first use (atomically)."""
    source = init_source()
    cc = compiler(platform)
    digest = hashlib.sha256(b"\0".join([source, _compiler_id(cc), " ".join(_FLAGS).encode()]))
    key = digest.hexdigest()[:16]
    final = paths.cache_dir() / "init" / key
    binary = final / "init"
    if binary.is_file():
        return binary
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        (tmp / "init.c").write_bytes(source)
        cmd = [cc, *_FLAGS, "-o", str(tmp / "init"), str(tmp / "init.c")]
        log.debug("compiling the guest init: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise BuildError(f"compiling the guest init failed ({' '.join(cmd)}):\n{proc.stderr}")
        (tmp / "init.c").unlink()
        try:
            tmp.rename(final)
        except OSError:
            if not binary.is_file():  # not merely a race lost to another process
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def add_platform(archive: CpioArchive, platform: Platform | None = None) -> None:
    """Put PID 1 and the directories it mounts on into ``archive`` (an image's runtime layer
    for ``platform``, default this host's).

    ``dev/console`` must exist in the initramfs itself: the kernel opens it as init's stdio
    before init can mount devtmpfs.
    """
    archive.add_file("init", ensure_init(platform), 0o755)
    for name in ("dev", "proc", "sys", "tmp", "run", "etc", "ukedge"):
        archive.add_dir(name, 0o1777 if name == "tmp" else 0o755)
    archive.add_char_device("dev/console", 5, 1, 0o600)
