"""Waiting on a condition with a generous ceiling, never on the clock alone.

The tests poll what they wait for (a node Ready, a replica placed, a result arrived) instead of
sleeping a fixed time, so a loaded 2-core machine makes them slower, not flaky; the ceiling is
only there to fail a test that would otherwise hang, naming what never happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


def until(condition: Callable[[], T], what: str, *, ceiling: float, every: float = 0.2) -> T:
    """``condition()``'s first truthy value, asked every ``every`` seconds; fails naming
    ``what`` once ``ceiling`` seconds have passed without one."""
    deadline = time.monotonic() + ceiling
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
