"""Shared rendering for every command: one rich console on stderr for progress and notices, and
plain stdout for results so that ``--json`` output pipes cleanly.

Both consoles are made on first use: a command that prints nothing through rich (``ukedge run``
streaming a console to the end) does not import it. Tables and JSON that rich would print as
plain text (no wrapping, no colour) are written here byte for byte as rich writes them, without
importing it: ``ukedge ps`` answers in a fraction of rich's import time. A test holds the two
together.
"""

from __future__ import annotations

import functools
import json
import os
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


#: The width of results written to a file or pipe.
_PIPED_WIDTH = 320


@functools.cache
def stdout() -> Console:
    """Results (tables, ids, JSON); piped into a file or another program, tables keep one row
    per line (as ``docker ps`` does) instead of wrapping at 80 columns."""
    from rich.console import Console

    return Console(
        highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else _PIPED_WIDTH
    )


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
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def print_json(data: Any) -> None:
    text = json.dumps(data, default=str)
    if sys.stdout.isatty() or _styled_anyway():
        out.print_json(text, indent=2)  # highlighted
    else:
        # What rich's JSON renderable writes uncoloured: the text re-read and indented.
        sys.stdout.write(json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()


#: Settings under which rich styles output that is not a terminal, or styles none on one.
_STYLE_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS")


def _styled_anyway() -> bool:
    return any(os.environ.get(name) for name in _STYLE_ENV)


def _plain(cell: str) -> bool:
    """Whether rich prints ``cell`` as it is: one column per character, no markup."""
    return cell.isascii() and cell.isprintable() and "[" not in cell


def _terminal_width() -> int | None:
    """The width rich gives a terminal (``COLUMNS`` first), or None when unsure."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return None


def _bold(text: str) -> str:
    return f"\x1b[1m{text}\x1b[0m"


def _plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]], header: bool) -> str | None:
    """The table as :func:`print_table`'s rich table prints it, when that is plain text: one
    line per row, cells padded to their column, two spaces apart (a header in bold on a
    terminal). None when rich would do more (fold a row wider than the console, measure
    wide characters, style by its environment): then rich prints it."""
    tty = sys.stdout.isatty()
    if _styled_anyway() or (tty and os.environ.get("TERM", "") in ("dumb", "unknown")):
        return None
    if not rows and not header:
        return None
    cells = [list(columns), *(list(row) for row in rows)]
    if not all(_plain(cell) for row in cells for cell in row):
        return None
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    limit = _terminal_width() if tty else _PIPED_WIDTH
    if limit is None or sum(widths) + 2 * (len(widths) - 1) >= limit:
        return None
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if header:
        if tty:
            # rich styles each cell and each padding space apart.
            title = (_bold(" ") * 2).join(
                _bold(c.ljust(w)) for c, w in zip(columns, widths, strict=True)
            )
        else:
            title = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
        lines.insert(0, title)
    return "".join(line + "\n" for line in lines)


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[object]], *, header: bool = True
) -> None:
    """A borderless table in the ``docker ps`` idiom (``header=False``: key/value facts)."""
    text = [[str(cell) for cell in row] for row in rows]
    plain = _plain_table(columns, text, header)
    if plain is not None:
        sys.stdout.write(plain)
        sys.stdout.flush()
        return
    from rich.table import Table

    table = Table(
        box=None, pad_edge=False, show_edge=False, header_style="bold", show_header=header
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in text:
        table.add_row(*row)
    out.print(table)


def print_image_record(doc: dict[str, Any], asked: str) -> None:
    """The record as JSON; on stderr, the tag assumed when ``asked`` named none."""
    name = asked.rsplit("/", 1)[-1]
    by_id = str(doc.get("digest", "")).removeprefix("sha256:").startswith(asked)
    if ":" not in name and "@" not in name and not by_id and doc.get("ref") != asked:
        err.print(f"no tag given: showing {doc.get('ref')} (the default tag is latest)")
    print_json(doc)
