"""Reading the guest init's exit report from a console log.

The guest prints ``ukedge-exit: {"status": N}`` once when its app ends (guest contract). The
same parser lives in ``ukedge.build.guest``; vmm keeps its own so that it depends on nothing
but the contract text (a test checks that both agree).
"""

from __future__ import annotations

import json
from pathlib import Path

EXIT_PREFIX = "ukedge-exit: "
#: The exit line is among the last lines of a console log; reading the tail keeps a chatty
#: app's long log cheap to check.
_TAIL = 64 * 1024


def parse_exit_line(text: str) -> int | None:
    """The status in the last well-formed exit line of ``text``, or None."""
    pos = len(text)
    while True:
        pos = text.rfind(EXIT_PREFIX, 0, pos)
        if pos < 0:
            return None
        end = text.find("\n", pos)
        payload = text[pos + len(EXIT_PREFIX) : end if end >= 0 else len(text)].strip()
        try:
            status = json.loads(payload).get("status")
        except (ValueError, AttributeError):
            status = None
        if isinstance(status, int) and not isinstance(status, bool) and 0 <= status <= 255:
            return status
        if pos == 0:
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
