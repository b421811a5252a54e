"""CPython 3.11 of another architecture, unpacked from Debian's packages (multiarch download).

An image for linux/arm64 built on an x86_64 host needs an arm64 interpreter and the libraries
it loads. Debian ships them as the same packages as the host's, for arm64: with
``dpkg --add-architecture arm64`` and an ``apt-get update``, ``apt-get download
python3.11-minimal:arm64 ...`` fetches them without installing anything, and ``dpkg-deb -x``
unpacks them into a private tree under the cache, which then serves as the install's root.
The host's own CPython 3.11 compiles the bytecode (``.pyc`` files do not depend on the
architecture) and lists the start-up modules.

The tree is keyed by the package versions apt would download now (``apt-cache show`` reads the
local lists, no network), so a Debian update makes a new tree and an unchanged one is reused.
It is unpacked into a temporary directory and renamed into place: a crash leaves no half tree.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ukedge.build._python import PythonInstall, find_python
from ukedge.errors import BuildError
from ukedge.image import Platform

__all__ = ["PYTHON_PACKAGES", "foreign_python"]

log = logging.getLogger(__name__)

#: The packages of another architecture the runtime is cut from: the interpreter, its stdlib
#: (``libpython3.11-stdlib`` has ``lib-dynload``), and the libraries the interpreter and the
#: kept extension modules (``KEPT_EXTENSIONS``) need: libc, zlib and expat (python3.11),
#: libffi (_ctypes), bzip2 (_bz2), xz (_lzma), libuuid (_uuid).
PYTHON_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
)


def _apt_versions(arch: str) -> list[str]:
    """``pkg:arch=version`` of every package, as apt would download it now."""
    pins = []
    for package in PYTHON_PACKAGES:
        name = f"{package}:{arch}"
        try:
            proc = subprocess.run(
                ["apt-cache", "show", "--no-all-versions", name],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "LC_ALL": "C"},
            )
        except OSError as exc:
            raise BuildError(f"cannot run apt-cache to find {name}: {exc}") from exc
        version = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in proc.stdout.splitlines()
                if ln.startswith("Version:")
            ),
            None,
        )
        if proc.returncode != 0 or version is None:
            raise BuildError(
                f"Debian package {name} is not known to apt: the python runtime for {arch} is "
                f"made from Debian's {arch} packages; enable the architecture with "
                f"`dpkg --add-architecture {arch} && apt-get update` (make deps does this)"
            )
        pins.append(f"{name}={version}")
    return pins


def foreign_python(platform: Platform, cache: Path) -> PythonInstall:
    """CPython 3.11 for ``platform`` unpacked under ``cache`` (downloaded the first time)."""
    arch = platform.architecture
    pins = _apt_versions(arch)
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:16]
    root = cache / f"{arch}-{key}"
    if not (root / ".complete").is_file():
        _unpack(pins, root)
    host = find_python()
    stdlib = root / "usr" / "lib" / "python3.11"
    executable = root / "usr" / "bin" / "python3.11"
    if not executable.is_file() or not (stdlib / "lib-dynload").is_dir():
        raise BuildError(f"{root} lacks python3.11 or its lib-dynload; remove it and build again")
    return PythonInstall(
        executable=executable,
        version="3.11",
        stdlib=stdlib,
        dynload=stdlib / "lib-dynload",
        root=root,
        machine=platform.machine,
        host_executable=host.executable,
    )


def _unpack(pins: list[str], root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        debs = work / "debs"
        tree = work / "root"
        debs.mkdir()
        tree.mkdir()
        log.info("downloading Debian packages: %s", " ".join(pins))
        proc = subprocess.run(
            ["apt-get", "download", "-q", *pins],
            cwd=debs,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            detail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
            raise BuildError(f"apt-get download of the python runtime's packages failed:\n{detail}")
        for deb in sorted(debs.glob("*.deb")):
            unpacked = subprocess.run(
                ["dpkg-deb", "-x", str(deb), str(tree)], capture_output=True, text=True
            )
            if unpacked.returncode != 0:
                raise BuildError(f"dpkg-deb -x {deb.name} failed: {unpacked.stderr.strip()}")
        (tree / ".complete").write_text("\n".join(pins) + "\n")
        try:
            tree.rename(root)
        except OSError:
            if not (root / ".complete").is_file():  # not merely a race lost to another build
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
