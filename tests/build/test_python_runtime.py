"""The pruned CPython runtime: what it keeps, what it drops, and that it really runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from ukedge.build import DROPPED_STDLIB, KEPT_EXTENSIONS, find_python
from ukedge.build._python import (
    PythonInstall,
    hot_modules,
    python_runtime_key,
    stage_python_runtime,
)

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/python3.11").exists(), reason="needs Debian's python3.11"
)

_LIB = "usr/lib/python3.11"


@pytest.fixture(scope="module")
def py() -> PythonInstall:
    return find_python()


@pytest.fixture(scope="module")
def staged(py: PythonInstall, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("python-runtime")
    stage_python_runtime(py, root)
    return root


def _zip_names(staged: Path) -> list[str]:
    with zipfile.ZipFile(staged / "usr/lib/python311.zip") as zf:
        return zf.namelist()


def test_interpreter_and_links(staged: Path) -> None:
    assert (staged / "usr/bin/python3.11").is_file()
    assert os.access(staged / "usr/bin/python3.11", os.X_OK)
    assert str(Path(staged / "usr/bin/python3").readlink()) == "python3.11"
    assert str(Path(staged / "usr/bin/python").readlink()) == "python3.11"


def test_loader_and_exactly_the_needed_libraries(staged: Path) -> None:
    libs = sorted(p.name for p in (staged / "lib/x86_64-linux-gnu").iterdir())
    for needed in ("ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1"):
        assert needed in libs
    for big in ("libssl.so.3", "libcrypto.so.3", "libsqlite3.so.0", "libncursesw.so.6"):
        assert big not in libs
    assert str(Path(staged / "lib64/ld-linux-x86-64.so.2").readlink()) == (
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )


def test_dropped_stdlib_is_absent(staged: Path) -> None:
    names = _zip_names(staged)
    tops = {n.split("/", 1)[0] for n in names} | {p.name for p in (staged / _LIB).iterdir()}
    for dropped in DROPPED_STDLIB:
        if dropped == "sitecustomize.py":
            continue  # Debian's is dropped; ukedge's own takes its name (tested below)
        stem = dropped.removesuffix(".py")
        assert dropped not in tops and f"{stem}.pyc" not in tops, dropped
    assert not list(staged.rglob("*.py")), "sources must be dropped where bytecode exists"


def test_only_kept_extension_modules(staged: Path) -> None:
    kept = {p.name.split(".", 1)[0] for p in (staged / _LIB).glob("*.so")}
    assert kept <= set(KEPT_EXTENSIONS)
    assert {"_asyncio", "_json", "_decimal", "_ctypes"} <= kept
    assert not {"_ssl", "_hashlib", "_sqlite3", "_testcapi", "_curses"} & kept
    assert list((staged / _LIB / "lib-dynload").iterdir()) == [], "kept as getpath's landmark"


def test_hot_modules_loose_the_rest_zipped(py: PythonInstall, staged: Path) -> None:
    hot = hot_modules(py)
    assert {"encodings", "json", "re", "enum.pyc", "socket.pyc", "logging"} <= hot
    names = _zip_names(staged)
    assert "email/__init__.pyc" in names and "unittest/__init__.pyc" in names
    assert not [n for n in names if n.split("/", 1)[0] in hot]
    assert (staged / _LIB / "json" / "decoder.pyc").is_file()
    assert (staged / _LIB / "os.pyc").is_file(), "os.pyc is the prefix landmark"
    with zipfile.ZipFile(staged / "usr/lib/python311.zip") as zf:
        zipped = zf.read("email/message.pyc")[:8]
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    loose = (staged / _LIB / "json" / "decoder.pyc").read_bytes()[:8]
    for header in (zipped, loose):
        flags = int.from_bytes(header[4:8], "little")
        assert flags == 0b01, "hash-based and unchecked: valid whatever the file times"


def test_runtime_key_is_stable(py: PythonInstall) -> None:
    assert python_runtime_key(py) == python_runtime_key(py)


def test_staging_is_reproducible(py: PythonInstall, staged: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    stage_python_runtime(py, again)

    def files(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): (
                str(Path(p).readlink()).encode() if p.is_symlink() else p.read_bytes()
            )
            for p in sorted(root.rglob("*"))
            if p.is_file() or p.is_symlink()
        }

    assert files(again) == files(staged)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chroot") is None, reason="needs root")
def test_runtime_runs_alone_in_a_chroot(staged: Path) -> None:
    code = (
        "import sys, json, socket, logging\n"
        "print(sys.path_importer_cache.get('/usr/lib/python311.zip', 'zip never read'))\n"
        "import asyncio, decimal, ctypes, zoneinfo, hashlib, lzma, bz2, uuid, email.message\n"
        "print(sys.prefix, json.__file__, email.__file__, hashlib.sha256(b'x').hexdigest()[:8])\n"
        "try:\n    import ssl\nexcept ImportError:\n    print('no ssl')\n"
        "try:\n    json.loads('{')\nexcept ValueError as e:\n"
        "    print(e.__traceback__.tb_next.tb_frame.f_code.co_filename)\n"
    )
    proc = subprocess.run(
        [str(shutil.which("chroot")), str(staged), "/usr/bin/python3", "-S", "-c", code],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": "/usr/lib/python3.11",
        },
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", "no getpath warnings, no import noise"
    lines = proc.stdout.splitlines()
    assert lines[0] == "zip never read", "hot imports are satisfied before the zip"
    assert lines[1] == (
        "/usr /usr/lib/python3.11/json/__init__.pyc "
        "/usr/lib/python311.zip/email/__init__.pyc 2d711642"
    )
    assert lines[2] == "no ssl"
    assert lines[3] == "/usr/lib/python3.11/json/__init__.py", "tracebacks show guest paths"


def test_runtime_reseeds_random_on_the_resume_signal(staged: Path) -> None:
    """ukedge's sitecustomize: what init sends a resumed clone makes random draw afresh, as
    after a fork; without site (-S) nothing is installed."""
    code = (
        "import os, random, signal, sys\n"
        "random.seed(7)\n"
        "os.kill(os.getpid(), signal.SIGWINCH)\n"
        "print(random.random() != random.Random(7).random())\n"
    )
    outputs = []
    for flags in ([], ["-S"]):
        proc = subprocess.run(
            [str(shutil.which("chroot")), str(staged), "/usr/bin/python3", *flags, "-c", code],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin", "PYTHONNOUSERSITE": "1", "PYTHONPATH": "/usr/lib/python3.11"},
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout.strip())
    assert outputs == ["True", "False"]
