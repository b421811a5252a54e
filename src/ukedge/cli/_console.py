"""Shared rendering for every command: one rich console on stderr for progress and notices, and
plain stdout for results so that ``--json`` output pipes cleanly.

Both consoles are made on first use: a command that prints nothing through rich (``ukedge run``
streaming a console to the end) does not import it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "ago",
    "err",
    "out",
    "print_image_record",
    "print_json",
    "print_table",
    "stderr",
    "stdout",
    "when",
]


class _OnFirstUse:
    """Stands for a :class:`~rich.console.Console` and makes it when first used (for calls
    only: what needs the console itself, such as a ``Progress``, takes :func:`stderr`)."""

    def __init__(self, make: Callable[[], Console]) -> None:
        self._make = make

    def __getattr__(self, name: str) -> Any:
        return getattr(self._make(), name)


@functools.cache
def stdout() -> Console:
    """Results (tables, ids, JSON); piped into a file or another program, tables keep one row
    per line (as ``docker ps`` does) instead of wrapping at 80 columns."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 320)


@functools.cache
def stderr() -> Console:
    """Progress bars, notices and errors; a message is never broken at 80 columns."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


out = cast("Console", _OnFirstUse(stdout))
err = cast("Console", _OnFirstUse(stderr))


def ago(timestamp: float | None) -> str:
    """How long ago, as ``docker ps`` says it (``3 minutes``); ``-`` for never."""
    if timestamp is None:
        return "-"
    seconds = max(0, int(time.time() - timestamp))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def when(timestamp: float | None, never: str = "never") -> str:
    """A moment as ISO 8601 in UTC, to the second."""
    if timestamp is None:
        return never
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str), indent=2)


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[object]], *, header: bool = True
) -> None:
    """A borderless table in the ``docker ps`` idiom (``header=False``: key/value facts)."""
    from rich.table import Table

    table = Table(
        box=None, pad_edge=False, show_edge=False, header_style="bold", show_header=header
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    out.print(table)


def print_image_record(doc: dict[str, Any], asked: str) -> None:
    """The record as JSON; on stderr, the tag assumed when ``asked`` named none."""
    name = asked.rsplit("/", 1)[-1]
    by_id = str(doc.get("digest", "")).removeprefix("sha256:").startswith(asked)
    if ":" not in name and "@" not in name and not by_id and doc.get("ref") != asked:
        err.print(f"no tag given: showing {doc.get('ref')} (the default tag is latest)")
    print_json(doc)
