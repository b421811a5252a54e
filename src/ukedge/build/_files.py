"""Which files of the build directory go into the app layer, and where.

Patterns follow ``.gitignore`` habits: a pattern without ``/`` matches a file or directory name at
any depth (``*.md``, ``__pycache__``), one with ``/`` matches the path relative to the build
directory (``static/**``, ``conf/*.json``); ``*`` and ``?`` stop at ``/``, ``**`` crosses it. A
directory that matches ``exclude`` is skipped whole; one that matches ``include`` brings
everything below it.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ukedge.build._ukfile import UKFILE_NAME, FilesSection
from ukedge.errors import UkfileError

__all__ = ["DEFAULT_EXCLUDES", "AppFile", "select_files"]

#: Never copied unless a [files.copy] entry names them.
DEFAULT_EXCLUDES = (
    UKFILE_NAME,
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "__pycache__",
    "*.pyc",
    "*.pyo",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".DS_Store",
    "*.swp",
    "*~",
)


@dataclass(frozen=True)
class AppFile:
    """One file (or symbolic link) of the app layer."""

    source: Path
    dest: str  # absolute guest path


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    anchored = "/" in pattern.rstrip("/")
    body = pattern.strip("/")
    out = []
    i = 0
    while i < len(body):
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(body[i]))
            i += 1
    regex = "".join(out)
    return re.compile(regex if anchored else f"(?:.*/)?{regex}")


def _matches(patterns: tuple[str, ...] | list[str], rel: str) -> str | None:
    for pattern in patterns:
        if _compile(pattern).fullmatch(rel):
            return pattern
    return None


def select_files(
    context: Path, files: FilesSection, *, ukfile: str, skip: frozenset[str] = frozenset()
) -> list[AppFile]:
    """The app files in guest-path order. ``skip`` names paths (relative) the runtime handles
    itself, e.g. C sources that are compiled instead of copied."""
    excludes = [*DEFAULT_EXCLUDES, *files.exclude]
    used: set[str] = set()
    chosen: dict[str, AppFile] = {}
    dest_root = PurePosixPath(files.dest)
    for root, dirs, names in os.walk(context):
        here = Path(root)
        rel_dir = here.relative_to(context).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        keep_dirs = []
        for d in sorted(dirs):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if _matches(excludes, rel):
                continue
            if (here / d).is_symlink():
                names.append(d)  # a link to a directory is copied as a link
                continue
            keep_dirs.append(d)
        dirs[:] = keep_dirs
        for name in sorted(names):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if rel in skip or _matches(excludes, rel):
                continue
            hit = _include_hit(files.include, rel)
            if hit is None:
                continue
            used.add(hit)
            source = here / name
            if not source.is_symlink() and not source.is_file():
                continue  # sockets, fifos, devices: nothing an app layer can carry
            dest = str(dest_root / rel)
            chosen[dest] = AppFile(source, dest)
    if files.include != ["**"]:
        for index, pattern in enumerate(files.include):
            if pattern not in used:
                raise UkfileError(
                    ukfile, f"files.include[{index}]", f"{pattern!r} matches no file in {context}"
                )
    for src, dest in files.copy_.items():
        source = context / src
        if not source.exists() and not source.is_symlink():
            raise UkfileError(ukfile, f"files.copy.{src!r}", f"{src} does not exist in {context}")
        if source.is_dir() and not source.is_symlink():
            for path in sorted(source.rglob("*")):
                if path.is_file() or path.is_symlink():
                    target = str(PurePosixPath(dest) / path.relative_to(source).as_posix())
                    chosen[target] = AppFile(path, target)
        else:
            chosen[dest] = AppFile(source, dest)
    return [chosen[k] for k in sorted(chosen)]


def _include_hit(patterns: list[str], rel: str) -> str | None:
    """The include pattern that matches ``rel`` or one of its parent directories."""
    parts = rel.split("/")
    for depth in range(len(parts), 0, -1):
        hit = _matches(patterns, "/".join(parts[:depth]))
        if hit is not None:
            return hit
    return None
