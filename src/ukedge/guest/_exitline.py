"""The guest init's exit report on the console: written by ``init.c``, read here, once.

The exit line is :data:`EXIT_PREFIX` followed by a JSON object on the rest of the line, whose
``status`` is an integer from 0 to 255 (``{"status": 0}``; any JSON whitespace, other keys
ignored). Init writes exactly ``ukedge-exit: {"status": N}`` after everything the app printed,
possibly right after an app line left without its newline, so the prefix counts wherever it
starts. The last well-formed line wins; a line that does not parse, or whose status is not an
integer in range (``999``, ``"0"``, ``true``, ``1.0``), is not an exit line, and an earlier
good one stands.
"""

from __future__ import annotations

import json
from pathlib import Path

from ukedge.guest._contract import EXIT_PREFIX, HELD_LINE

__all__ = [
    "format_exit_line",
    "is_held",
    "is_protocol_line",
    "parse_exit_line",
    "read_exit_status",
]

#: The exit line is among the last lines of a console log; reading the tail keeps a chatty
#: app's long log cheap to check.
_TAIL = 64 * 1024
#: What the kernel prints as init resets the machine after the exit line.
_REBOOT_LINE = b"reboot: Restarting system"


def format_exit_line(status: int) -> str:
    """The line init prints for ``status`` (what ``finish()`` in ``init.c`` writes)."""
    if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 255:
        raise ValueError(f"exit status must be an integer from 0 to 255, got {status!r}")
    return f'{EXIT_PREFIX}{{"status": {status}}}\n'


def _status(payload: str) -> int | None:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):  # an app can print anything after the prefix
        return None
    status = value.get("status") if isinstance(value, dict) else None
    if isinstance(status, int) and not isinstance(status, bool) and 0 <= status <= 255:
        return status
    return None


def parse_exit_line(text: str) -> int | None:
    """The status in the last well-formed exit line of ``text``, or None when there is none
    (the guest crashed, was killed, or still runs)."""
    pos = len(text)
    while (pos := text.rfind(EXIT_PREFIX, 0, pos)) >= 0:
        end = text.find("\n", pos)
        status = _status(text[pos + len(EXIT_PREFIX) : end if end >= 0 else len(text)])
        if status is not None:
            return status
    return None


def read_exit_status(console: Path) -> int | None:
    """The app's exit status reported on the console file, or None when there is none."""
    try:
        with console.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - _TAIL))
            return parse_exit_line(fh.read().decode(errors="replace"))
    except FileNotFoundError:
        return None


def is_protocol_line(line: bytes) -> bool:
    """Whether a console line is the guest's report to the host rather than app output: the
    exit line, the kernel's reset message after it and init's hold line (``ukedge run`` hides
    them)."""
    return line.startswith((EXIT_PREFIX.encode(), _REBOOT_LINE, HELD_LINE.encode()))


def is_held(console: str) -> bool:
    """Whether the console shows init holding before the app starts (``ukedge.hold``): a line
    of its own, ended by the serial console's CR LF."""
    return any(line.rstrip("\r") == HELD_LINE for line in console.split("\n")[:-1])
