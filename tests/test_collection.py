"""Every test module under ``tests/`` is collected by the project's own pytest configuration.

pytest's default ``norecursedirs`` contains ``build``, so for a long time nothing under
``tests/build/`` ran while CI stayed green. This guard runs the collection the way ``make test``
does (same root, same ``pyproject.toml``) in a fresh process and fails if any ``test_*.py`` file
on disk yields no test item: an excluded directory, a collection error, or a module that defines
no test at all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
_ROOT = _TESTS.parent


def _modules_on_disk() -> set[str]:
    found: set[str] = set()
    for pattern in ("test_*.py", "*_test.py"):
        for path in _TESTS.rglob(pattern):
            rel = path.relative_to(_ROOT)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            found.add(rel.as_posix())
    return found


def _collect() -> subprocess.CompletedProcess[str]:
    # -p no:cacheprovider: collection must not write .pytest_cache as a side effect of a test.
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_test_module_is_collected() -> None:
    proc = _collect()
    collected = {line.split("::", 1)[0] for line in proc.stdout.splitlines() if "::" in line}
    on_disk = _modules_on_disk()
    assert on_disk, "found no test modules under tests/; is the guard looking in the right place?"
    missing = sorted(on_disk - collected)
    assert not missing, (
        "these test modules are not collected by pytest's configuration (check norecursedirs, "
        "testpaths, --ignore in addopts, collection errors, or a module with no test):\n  "
        + "\n  ".join(missing)
        + f"\n\npytest exited {proc.returncode}; its output ends:\n"
        + "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
