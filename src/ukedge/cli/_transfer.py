"""Rich progress bars for registry transfers (push and pull): one bar per blob, bytes and speed.

Implements :class:`ukedge.registry.TransferProgress`; rich's ``Progress`` is thread-safe, and
the transfer workers call in from their threads. Outcomes are recorded for the summary line and
``--json``.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from ukedge.cli._console import stderr
from ukedge.registry import BlobOutcome
from ukedge.units import format_size

__all__ = ["RichTransferProgress"]

_MOVED = frozenset({BlobOutcome.UPLOADED, BlobOutcome.RESUMED, BlobOutcome.DOWNLOADED})


class RichTransferProgress:
    def __init__(self, *, enabled: bool = True) -> None:
        self._bars = Progress(
            TextColumn("{task.fields[short]}"),
            TextColumn("{task.fields[label]:<6}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[outcome]}"),
            console=stderr(),
            disable=not enabled,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._blobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichTransferProgress:
        self._bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bars.stop()

    def start(self, digest: str, label: str, total: int) -> None:
        with self._lock:
            self._blobs[digest] = {"digest": digest, "label": label, "size": total, "outcome": None}
            if digest not in self._tasks:
                self._tasks[digest] = self._bars.add_task(
                    "", total=total, short=digest[7:19], label=label, outcome=""
                )

    def update(self, digest: str, completed: int) -> None:
        task = self._tasks.get(digest)
        if task is not None:
            self._bars.update(task, completed=completed)

    def finish(self, digest: str, outcome: BlobOutcome) -> None:
        with self._lock:
            self._blobs[digest]["outcome"] = str(outcome)
            task = self._tasks[digest]
        self._bars.update(task, completed=self._blobs[digest]["size"], outcome=str(outcome))

    @property
    def blobs(self) -> list[dict[str, Any]]:
        """Per-blob records: digest, label, size, outcome."""
        with self._lock:
            return [dict(b) for b in self._blobs.values()]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        moved = 0
        for blob in self.blobs:
            outcome = blob["outcome"] or "unfinished"
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in _MOVED:
                moved += blob["size"]
        parts = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
        return f"{parts}; {format_size(moved)} transferred"
