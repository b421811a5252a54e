"""Pure-Python requirements of a ``python`` app, installed with pip into the app layer.

pip runs on the host but resolves for the guest: ``--platform any --only-binary=:all:`` lets it
pick only ``*-none-any`` wheels, so a package that exists only with compiled extensions (or only
as an sdist, whose build could run arbitrary code and compilers) is refused instead of being
built for the host's libc. After the install the tree is checked again for extension modules
and for wheels that declare themselves platform-specific.

Installs are cached by the requirement list and the pip/Python versions, which makes a rebuild
of an unchanged app fast and offline; pin exact versions (``name==1.2.3``) for reproducible
images, since an unpinned requirement keeps whatever version was cached first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ukedge.errors import BuildError, UkfileError

__all__ = ["install_requirements", "read_requirements_file", "requirements_key"]

log = logging.getLogger(__name__)

_COMPILED = (".so", ".pyd", ".dylib", ".dll")
_NO_MATCH = re.compile(
    r"(?:Could not find a version that satisfies the requirement|"
    r"No matching distribution found for) (\S+)"
)


def read_requirements_file(path: Path, *, ukfile: str, field: str) -> list[str]:
    """Requirement lines of a requirements.txt; options (``-r``, ``--index-url``) are refused so
    that everything that decides the install is in the file's own lines."""
    if not path.is_file():
        raise UkfileError(ukfile, field, f"{path.name} does not exist in {path.parent}")
    lines: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise UkfileError(
                ukfile,
                field,
                f"{path.name} line {number}: pip options ({line.split()[0]}) are "
                "not supported; list one requirement per line",
            )
        lines.append(line)
    return lines


def requirements_key(requirements: list[str]) -> str:
    """What an install depends on: the requirements, the pip and Python versions, pip's env."""
    pip_env = sorted((k, v) for k, v in os.environ.items() if k.startswith("PIP_"))
    doc = {
        "requirements": requirements,
        "pip": _pip_version(),
        "python": "3.11",
        "env": pip_env,
        "module": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _pip_version() -> str:
    try:
        from importlib.metadata import version

        return version("pip")
    except Exception:  # pip missing: the install below says so
        return "none"


def install_requirements(requirements: list[str], cache: Path, *, ukfile: str, field: str) -> Path:
    """Install into a cached directory (returned) whose content becomes site-packages."""
    key = requirements_key(requirements)
    target = cache / key
    if (target / ".complete").exists():
        log.debug("requirements cached in %s", target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pip-") as tmp:
        staging = Path(tmp) / "site-packages"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--target",
            str(staging),
            "--only-binary=:all:",
            "--platform",
            "any",
            "--python-version",
            "3.11",
            "--implementation",
            "py",
            "--no-compile",
            "--no-warn-script-location",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            *requirements,
        ]
        log.debug("pip: %s", cmd)
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            output = (proc.stderr + proc.stdout).strip()
            m = _NO_MATCH.search(output)
            if m:
                raise UkfileError(
                    ukfile,
                    field,
                    f"no pure-Python wheel of {m.group(1)} found: the python runtime installs only "
                    "pure-Python packages (no compiled extensions, no source builds)",
                )
            tail = "\n".join(output.splitlines()[-10:])
            raise BuildError(f"pip could not install {', '.join(requirements)}:\n{tail}")
        _check_pure(staging, ukfile=ukfile, field=field)
        shutil.rmtree(staging / "bin", ignore_errors=True)  # scripts with the host's shebang
        (staging / ".complete").write_text("")
        try:
            staging.rename(target)
        except OSError:
            if not (target / ".complete").exists():  # not a concurrent build that won the race
                raise
    return target


def _check_pure(tree: Path, *, ukfile: str, field: str) -> None:
    for wheel in sorted(tree.glob("*.dist-info/WHEEL")):
        text = wheel.read_text(encoding="utf-8", errors="replace")
        if "Root-Is-Purelib: false" in text:
            name = wheel.parent.name.split("-", 1)[0]
            raise UkfileError(
                ukfile,
                field,
                f"{name} is not a pure-Python package (its wheel is "
                "platform-specific); the python runtime cannot load compiled extensions",
            )
    for path in sorted(tree.rglob("*")):
        if path.suffix in _COMPILED or ".so." in path.name:
            rel = path.relative_to(tree)
            raise UkfileError(
                ukfile,
                field,
                f"{rel.parts[0]} ships a compiled extension ({rel}); the python "
                "runtime installs only pure-Python packages",
            )
