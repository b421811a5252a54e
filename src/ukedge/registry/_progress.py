"""Progress of blob transfers, reported to whoever shows it (rich bars, an SSE stream).

Calls come from the transfer worker threads, so an implementation must be thread-safe. An
exception raised by a callback aborts that transfer and the push or pull with it; an upload
interrupted that way resumes where the registry stopped on the next push.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

__all__ = ["BlobOutcome", "ByteProgress", "NullProgress", "TransferProgress", "ignore_bytes"]

#: Told the bytes of one blob transferred so far (absolute, not a delta).
ByteProgress = Callable[[int], None]


def ignore_bytes(_: int) -> None:
    """The default :data:`ByteProgress`: reports nothing."""


class BlobOutcome(enum.StrEnum):
    """What happened to one blob of a push or pull."""

    UPLOADED = "uploaded"
    RESUMED = "resumed"  # an interrupted upload continued from the registry's offset
    MOUNTED = "mounted"  # cross-repository mount: no bytes sent
    EXISTS = "exists"  # the registry already had it: no bytes sent
    DOWNLOADED = "downloaded"
    CACHED = "cached"  # the local store already had it: no bytes fetched


class TransferProgress(Protocol):
    def start(self, digest: str, label: str, total: int) -> None:
        """A blob transfer begins; ``label`` says what it is (``kernel``, ``initrd``…)."""

    def update(self, digest: str, completed: int) -> None:
        """``completed`` bytes of the blob are now on the other side (absolute, not a delta)."""

    def finish(self, digest: str, outcome: BlobOutcome) -> None:
        """The blob is done."""


class NullProgress:
    """Reports nothing; the default for library callers."""

    def start(self, digest: str, label: str, total: int) -> None:
        pass

    def update(self, digest: str, completed: int) -> None:
        pass

    def finish(self, digest: str, outcome: BlobOutcome) -> None:
        pass
