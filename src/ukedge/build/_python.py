"""The ``python`` runtime: a pruned CPython 3.11 taken from the host's Debian ``python3.11``
(for another architecture, from Debian's packages of it: :mod:`ukedge.build._python_debs`).

The guest has no package manager and no dynamic-library cache, so the layer carries exactly what
the interpreter needs, at the paths Debian's build expects (``/usr/bin/python3.11`` with its
stdlib in ``/usr/lib/python3.11``), so that ``sys.prefix`` resolves to ``/usr`` without
``PYTHONHOME``:

* the interpreter (Debian links libpython statically into it) and ``python3``/``python`` links;
* the shared libraries it and the kept extension modules need, found by reading ``DT_NEEDED``
  (not by running ``ldd``), plus the dynamic loader at its ``PT_INTERP`` path;
* the stdlib without what an edge service cannot use (tests, IDLE, Tk, ensurepip, lib2to3,
  distutils, the static libpython, docs data, CJK codecs, ...), compiled to sourceless ``.pyc``
  with ``unchecked-hash`` invalidation: every file in a layer has the same mtime, so
  timestamp-checked bytecode would be rejected and recompiled at every start, which under TCG
  costs seconds; and without sources the layer is half the size.

Where the pruning is too aggressive for an application, it gets a clear ``ImportError`` for the
module; :data:`DROPPED_STDLIB` and :data:`KEPT_EXTENSIONS` document what is left out and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ukedge.build._elf import read_elf
from ukedge.errors import BuildError
from ukedge.guest import CpioArchive

__all__ = [
    "DROPPED_STDLIB",
    "KEPT_EXTENSIONS",
    "PYTHON_ENV",
    "PYTHON_EXECUTABLE",
    "PythonInstall",
    "add_python_runtime",
    "compile_tree",
    "find_python",
    "python_runtime_key",
    "stage_python_runtime",
]

log = logging.getLogger(__name__)

#: The interpreter the runtime is cut from; ``UKEDGE_PYTHON`` overrides it (same layout needed).
PYTHON_EXECUTABLE = Path("/usr/bin/python3.11")

#: The resume hook every python image carries as ``sitecustomize`` (see that file).
_SITECUSTOMIZE = Path(__file__).with_name("_guest_sitecustomize.py")

#: What every python image gets in its environment (the Ukfile's [env] wins).
PYTHON_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",  # the root file system is RAM; nothing to cache across boots
    "PYTHONNOUSERSITE": "1",  # no home directory, no user site
    "PYTHONUNBUFFERED": "1",  # the console is the log; lines must not sit in a buffer
    "LANG": "C.UTF-8",  # built into glibc 2.36, so no locale files are needed
    # the loose part of the stdlib ahead of python311.zip (see hot_modules)
    "PYTHONPATH": "/usr/lib/python3.11",
}

#: Top-level stdlib entries left out of the layer, with the reason.
DROPPED_STDLIB: dict[str, str] = {
    "test": "CPython's own test suite",
    "idlelib": "the IDLE editor (needs Tk)",
    "tkinter": "Tk GUI bindings; no display in a guest",
    "turtle.py": "Tk turtle graphics",
    "turtledemo": "Tk demos",
    "ensurepip": "bootstraps pip; packages are installed at build time",
    "venv": "virtual environments need ensurepip",
    "lib2to3": "Python 2 conversion tool",
    "pydoc_data": "help() topic texts (1.2 MB)",
    "distutils": "deprecated build tooling; no compiler in the guest",
    "_distutils_system_mod.py": "Debian's distutils hook",
    "config-3.11-x86_64-linux-gnu": "static libpython and build files for embedding (25 MB)",
    "site-packages": "host packages",
    "dist-packages": "host packages",
    "sitecustomize.py": "Debian's link to /etc/python3.11, which the guest does not have "
    "(ukedge's own resume hook takes the name)",
    "EXTERNALLY-MANAGED": "a marker for pip on the host",
    "__phello__": "frozen-module demo package",
    "__hello__.py": "frozen-module demo",
    "antigravity.py": "opens a web browser",
    "this.py": "an easter egg",
    "curses": "needs libncurses and a terminal",
    "sqlite3": "its extension module needs libsqlite3 (1.4 MB), left out",
    "ssl.py": "its extension module needs OpenSSL (5.4 MB), left out; hashlib keeps "
    "sha1/sha2/sha3/blake2/md5 built in",
    "__pycache__": "bytecode is compiled afresh for the guest",
}

#: Extension modules (``lib-dynload``) kept in the layer; all others are dropped. Everything not
#: listed is a test module, needs a large or host-specific library (OpenSSL, sqlite, ncurses,
#: readline, Berkeley DB, NIS), or is CJK codec tables (0.9 MB).
KEPT_EXTENSIONS = frozenset(
    {
        "_asyncio",
        "_bz2",
        "_contextvars",
        "_ctypes",
        "_decimal",
        "_json",
        "_lsprof",
        "_lzma",
        "_multiprocessing",
        "_posixshmem",
        "_queue",
        "_typing",
        "_uuid",
        "_zoneinfo",
        "mmap",
        "resource",
        "termios",
    }
)


def _library_dirs(machine: str) -> tuple[PurePosixPath, ...]:
    """Where Debian's loader looks for libraries without an ld.so.cache (multiarch dirs)."""
    return (
        PurePosixPath(f"/lib/{machine}-linux-gnu"),
        PurePosixPath(f"/usr/lib/{machine}-linux-gnu"),
        PurePosixPath("/lib64"),
        PurePosixPath("/usr/lib"),
    )


@dataclass(frozen=True)
class PythonInstall:
    """A host CPython whose files the runtime layer is made of."""

    executable: Path
    version: str  # "3.11"
    stdlib: Path  # /usr/lib/python3.11
    dynload: Path  # /usr/lib/python3.11/lib-dynload
    root: Path  # "/" normally; an unpacked tree of another architecture's packages, or tests
    #: ``uname -m`` of the interpreter's architecture (the guest's).
    machine: str = "x86_64"
    #: The host's own CPython 3.11 when ``executable`` is another architecture's and cannot
    #: run here: it compiles the bytecode (``.pyc`` is the same on every architecture for one
    #: CPython version) and lists the start-up modules (its stdlib has the same layout).
    host_executable: Path | None = None

    def guest_path(self, host: Path) -> str:
        return "/" + host.relative_to(self.root).as_posix()

    @property
    def runner(self) -> Path:
        """The interpreter that runs build steps here."""
        return self.host_executable or self.executable


def find_python(executable: Path | None = None) -> PythonInstall:
    """Locate the interpreter and ask it where its stdlib lives."""
    exe = Path(executable or os.environ.get("UKEDGE_PYTHON") or PYTHON_EXECUTABLE)
    if not exe.is_file():
        raise BuildError(
            f"the python runtime is made from {exe}, which is not installed; "
            "install Debian's python3.11 (apt-get install python3.11) or set UKEDGE_PYTHON"
        )
    probe = (
        "import json, sys, sysconfig; print(json.dumps([sys.version_info[:2], "
        "sysconfig.get_path('stdlib'), sysconfig.get_path('platstdlib')]))"
    )
    try:
        out = subprocess.run(
            [str(exe), "-I", "-S", "-c", probe], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"cannot run {exe} to locate its standard library: {exc}") from exc
    (major, minor), stdlib, _plat = json.loads(out)
    if (major, minor) != (3, 11):
        raise BuildError(f"{exe} is Python {major}.{minor}; the python runtime is CPython 3.11")
    stdlib_path = Path(stdlib)
    return PythonInstall(exe, "3.11", stdlib_path, stdlib_path / "lib-dynload", Path("/"))


def _stdlib_files(py: PythonInstall) -> Iterable[Path]:
    """Every stdlib file the layer keeps, in a stable order (extension modules included)."""
    for root, dirs, files in os.walk(py.stdlib):
        here = Path(root)
        top = here == py.stdlib
        dirs[:] = sorted(
            d for d in dirs if d != "__pycache__" and not (top and d in DROPPED_STDLIB)
        )
        if here == py.dynload:
            for name in sorted(files):
                if name.split(".", 1)[0] in KEPT_EXTENSIONS:
                    yield here / name
            dirs[:] = []
            continue
        for name in sorted(files):
            if top and name in DROPPED_STDLIB:
                continue
            if name.endswith((".pyc", ".pyo", ".exe")):
                continue
            yield here / name


def _resolve_library(name: str, root: Path, machine: str) -> Path:
    for directory in _library_dirs(machine):
        candidate = root / directory.relative_to("/") / name
        if candidate.exists():
            return candidate
    raise BuildError(f"shared library {name} needed by the python runtime was not found")


def _needed_libraries(
    binaries: Iterable[Path], root: Path, machine: str
) -> tuple[dict[str, Path], str | None]:
    """Transitive ``DT_NEEDED`` closure: guest path -> host file, and the loader's path."""
    found: dict[str, Path] = {}
    interpreter: str | None = None
    todo = list(binaries)
    seen: set[Path] = set()
    while todo:
        binary = todo.pop()
        if binary in seen:
            continue
        seen.add(binary)
        info = read_elf(binary, machine)
        interpreter = interpreter or info.interpreter
        for name in info.needed:
            host = _resolve_library(name, root, machine)
            guest = "/" + host.relative_to(root).as_posix()
            if guest not in found:
                found[guest] = host
                todo.append(host.resolve())
    return found, interpreter


def stage_python_runtime(py: PythonInstall, dest: Path, *, zip_stdlib: bool = True) -> None:
    """Lay the pruned, compiled runtime out under ``dest`` as the guest will see it."""
    bindir = dest / "usr" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(py.executable, bindir / "python3.11")
    (bindir / "python3.11").chmod(0o755)
    for alias in ("python3", "python"):
        (bindir / alias).symlink_to("python3.11")

    stdlib_dest = dest / py.guest_path(py.stdlib).lstrip("/")
    extensions: list[Path] = []
    for src in _stdlib_files(py):
        target = stdlib_dest / src.relative_to(py.stdlib)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink() and not src.resolve().is_relative_to(py.stdlib):
            continue  # a Debian link out of the stdlib (to /etc): the guest lacks the target
        shutil.copyfile(src, target)
        if src.parent == py.dynload:
            extensions.append(src)

    libraries, interpreter = _needed_libraries([py.executable, *extensions], py.root, py.machine)
    if interpreter is None:
        raise BuildError(f"{py.executable} has no program interpreter; expected a dynamic ELF")
    # The loader goes where the libraries are (libc names it by soname too) and PT_INTERP's
    # path becomes a link to it, so it is stored once.
    loader = _resolve_library(PurePosixPath(interpreter).name, py.root, py.machine)
    loader_guest = "/" + loader.relative_to(py.root).as_posix()
    libraries[loader_guest] = loader
    for guest, host in sorted(libraries.items()):
        target = dest / guest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host.resolve(), target)
        target.chmod(0o755)
    if interpreter != loader_guest:
        link = dest / interpreter.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():  # arm64's loader already sits at its PT_INTERP path (/lib)
            link.symlink_to(loader_guest)
    # ukedge's own sitecustomize (Debian's is dropped): reseeds on resume from a snapshot.
    shutil.copyfile(_SITECUSTOMIZE, stdlib_dest / "sitecustomize.py")
    compile_tree(py, stdlib_dest, py.guest_path(py.stdlib), drop_sources=True)
    if zip_stdlib:
        hot = hot_modules(py)
        dynload = stdlib_dest / "lib-dynload"
        for ext in sorted(dynload.iterdir()):
            ext.rename(stdlib_dest / ext.name)
        zip_path = stdlib_dest.parent / f"python{py.version.replace('.', '')}.zip"
        zip_tree(stdlib_dest, zip_path, select=lambda top: _zipped(top, hot))


#: What a typical small service imports; these modules and everything they import stay loose.
HOT_IMPORTS = (
    "json",
    "socket",
    "selectors",
    "signal",
    "time",
    "datetime",
    "struct",
    "logging",
    "threading",
)
#: Never zipped: the directory getpath checks for ``sys.exec_prefix`` (kept, empty), the
#: landmark it checks for ``sys.prefix`` (without them every start warns), the licence.
_ALWAYS_LOOSE = frozenset({"lib-dynload", "os.pyc", "LICENSE.txt"})


def _zipped(top: str, hot: frozenset[str]) -> bool:
    return top not in hot and top not in _ALWAYS_LOOSE and not top.endswith(".so")


def hot_modules(py: PythonInstall) -> frozenset[str]:
    """Top-level stdlib entries (``json``, ``enum.pyc``) that :data:`HOT_IMPORTS` pull in.

    The stdlib is split in two for the guest. The hot part stays as loose files in
    ``/usr/lib/python3.11``, together with the extension modules, and ``PYTHONPATH`` puts that
    directory ahead of ``python311.zip``; everything else is zipped. A start that imports only
    hot modules then never reads the zip's directory, which is 0.2 s of interpreted code under
    TCG, while the zip (deflated) keeps the rest at 40% of its RAM: the root file system is RAM,
    and the guest's memory must be twice what the root holds ("Guest memory" in
    docs/image-format.md).
    """
    code = (
        f"import sys; import {', '.join(HOT_IMPORTS)}\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None)\n"
        "    if f: print(f)\n"
    )
    try:
        out = subprocess.run(
            [str(py.runner), "-S", "-I", "-c", code], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"cannot run {py.runner} to list its start-up modules: {exc}") from exc
    # The runner's stdlib: the install's own, or the host's at the path the guest uses.
    stdlib = Path(py.guest_path(py.stdlib)) if py.host_executable else py.stdlib
    dynload = stdlib / py.dynload.relative_to(py.stdlib)
    tops = set()
    for line in out.splitlines():
        path = Path(line)
        if path.is_relative_to(stdlib) and not path.is_relative_to(dynload):
            top = path.relative_to(stdlib).parts[0]
            tops.add(top[:-3] + ".pyc" if top.endswith(".py") else top)
    return frozenset(tops)


def zip_tree(tree: Path, dest: Path, *, select: Callable[[str], bool]) -> None:
    """Move the files under the top-level entries of ``tree`` that ``select`` picks into a
    deterministic deflated zip (sorted, fixed times and modes) that CPython imports from."""
    files = sorted(
        p for p in tree.rglob("*") if p.is_file() and select(p.relative_to(tree).parts[0])
    )
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in files:
            info = zipfile.ZipInfo(
                path.relative_to(tree).as_posix(), date_time=(1980, 1, 1, 0, 0, 0)
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, path.read_bytes(), compresslevel=9)
    for path in files:
        path.unlink()
    for directory in sorted((p for p in tree.rglob("*") if p.is_dir()), reverse=True):
        if select(directory.relative_to(tree).parts[0]) and not any(directory.iterdir()):
            directory.rmdir()


def compile_tree(py: PythonInstall, tree: Path, guest_dir: str, *, drop_sources: bool) -> None:
    """Compile every ``.py`` under ``tree`` with the runtime's own interpreter.

    ``unchecked-hash`` bytecode is valid whatever the file times are (a layer fixes them all to
    one value). With ``drop_sources`` the ``.pyc`` sits in place of the source (sourceless
    import); otherwise in ``__pycache__`` next to it. ``guest_dir`` is what tracebacks show.
    """
    cmd = [
        str(py.runner),
        "-I",
        "-m",
        "compileall",
        "-q",
        "-j",
        # a process pool pays off for the stdlib, not for an app's handful of modules
        "0" if sum(1 for _ in tree.rglob("*.py")) > 50 else "1",
        "--invalidation-mode",
        "unchecked-hash",
        "-s",
        str(tree),
        "-p",
        guest_dir,
    ]
    if drop_sources:
        cmd.append("-b")
    cmd.append(str(tree))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SOURCE_DATE_EPOCH": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise BuildError(f"compiling {tree} failed: " + " | ".join(detail))
    if drop_sources:
        for path in tree.rglob("*.py"):
            if path.with_suffix(".pyc").exists():
                path.unlink()


def add_python_runtime(archive: CpioArchive, staged: Path) -> None:
    """Put a staged runtime into an archive (paths as the guest sees them)."""
    archive.add_tree(staged, "/")


def python_runtime_key(py: PythonInstall) -> str:
    """A hash of everything the staged runtime depends on, for the layer cache.

    File metadata (path, size, mtime) stands in for content: a Debian upgrade of python3.11 or a
    library changes it, and walking the stdlib this way takes milliseconds.
    """
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(_SITECUSTOMIZE.read_bytes())
    for path in [py.executable, *_stdlib_files(py)]:
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    libraries, interpreter = _needed_libraries([py.executable], py.root, py.machine)
    for guest, host in sorted(libraries.items()):
        st = host.stat()
        h.update(f"{guest}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(f"interp={interpreter}".encode())
    if py.host_executable is not None:  # it compiles the bytecode
        st = py.host_executable.stat()
        h.update(f"runner={py.host_executable}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()
