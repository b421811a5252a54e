"""Type aliases shared across ukedge."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressCallback"]

#: ``progress(done, total)``; ``total`` is ``None`` when unknown.
ProgressCallback = Callable[[int, int | None], None]
