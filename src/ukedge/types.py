"""Type aliases shared across ukedge."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike

__all__ = ["Digest", "ProgressCallback", "StrPath"]

#: An OCI content digest such as ``sha256:<64 hex>``.
Digest = str
#: Anything ``pathlib.Path`` accepts.
StrPath = str | PathLike[str]
#: ``progress(done, total)``; ``total`` is ``None`` when unknown.
ProgressCallback = Callable[[int, int | None], None]
