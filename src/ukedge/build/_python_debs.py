"""CPython 3.11 of another architecture, unpacked from Debian's packages (multiarch download).

An image for linux/arm64 built on an x86_64 host needs an arm64 interpreter and the libraries
it loads. Debian ships them as the same packages as the host's, for arm64: with
``dpkg --add-architecture arm64`` and an ``apt-get update``, ``apt-get download
python3.11-minimal:arm64 ...`` fetches them without installing anything, and ``dpkg-deb -x``
unpacks them into a private tree under the cache, which then serves as the install's root.
The host's own CPython 3.11 compiles the bytecode (``.pyc`` files do not depend on the
architecture) and lists the start-up modules.

The tree is keyed by the package versions apt would download now (``apt-cache show`` reads the
local lists, no network; its answer is remembered until the lists change), so a Debian update
makes a new tree and an unchanged one is reused.
It is unpacked into a temporary directory and renamed into place: a crash leaves no half tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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


_APT_LISTS = Path("/var/lib/apt/lists")


def _lists_key() -> str:
    """What apt's answer depends on: its package lists (names, sizes, times)."""
    h = hashlib.sha256()
    with contextlib.suppress(OSError):
        for path in sorted(_APT_LISTS.iterdir()):
            st = path.stat()
            h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _apt_versions(arch: str, cache: Path) -> list[str]:
    """``pkg:arch=version`` of every package, as apt would download it now.

    One ``apt-cache show`` for all of them (seconds on a loaded machine), remembered in
    ``cache`` until apt's lists change, so a cached build does not ask apt again.
    """
    lists = _lists_key()
    memo = cache / f"versions-{arch}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        known = json.loads(memo.read_text())
        if known["lists"] == lists and isinstance(known["pins"], list):
            return [str(pin) for pin in known["pins"]]
    names = [f"{package}:{arch}" for package in PYTHON_PACKAGES]
    try:
        proc = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", *names],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "LC_ALL": "C"},
        )
    except OSError as exc:
        raise BuildError(
            f"cannot run apt-cache to find the python runtime's packages: {exc}"
        ) from exc
    versions: dict[str, str] = {}
    for stanza in proc.stdout.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Architecture") in (arch, "all") and "Package" in fields:
            versions.setdefault(fields["Package"], fields.get("Version", ""))
    missing = [
        name
        for name, package in zip(names, PYTHON_PACKAGES, strict=True)
        if not versions.get(package)
    ]
    if missing:
        raise BuildError(
            f"Debian package(s) {', '.join(missing)} not known to apt: the python runtime for "
            f"{arch} is made from Debian's {arch} packages; enable the architecture with "
            f"`dpkg --add-architecture {arch} && apt-get update` (make deps does this)"
        )
    pins = [f"{package}:{arch}={versions[package]}" for package in PYTHON_PACKAGES]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"lists": lists, "pins": pins}))
    tmp.replace(memo)
    return pins


def foreign_python(platform: Platform, cache: Path) -> PythonInstall:
    """CPython 3.11 for ``platform`` unpacked under ``cache`` (downloaded the first time)."""
    arch = platform.architecture
    pins = _apt_versions(arch, cache)
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
