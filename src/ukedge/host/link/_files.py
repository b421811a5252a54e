"""Small private files the link keeps in the agent's data directory, written crash-safely.

A write goes to a temporary name in the same directory (mode 0600 from the start: the files
hold the node's credential), is fsynced, renamed over the old file, and the directory is fsynced
so the rename survives a power cut. A crash at any point leaves the old file or the new one,
never a half-written one; a temporary file a crash left is removed by the next write.
"""

from __future__ import annotations

from pathlib import Path

from ukedge import paths
from ukedge.faults import crash_point

__all__ = ["read_private", "write_private"]


def write_private(path: Path, text: str, *, crash_name: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably (0600, :func:`paths.write_private`).

    ``crash_name`` names the crash point between the fsync of the new file and the rename
    (``UKEDGE_CRASH_POINT``), so tests can check a crash there keeps the old content.
    """
    paths.write_private(path, text, before_rename=lambda: crash_point(crash_name))


def read_private(path: Path) -> str | None:
    """The file's text, None when it does not exist; makes a file others could read 0600."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return text
