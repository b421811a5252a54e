"""An instance's console and results across restarts.

The backend starts every machine with an empty console in its work directory (the guest's exit
line is read from it), so before each start the last run's console moves to
``logs/console.N.log``; readers take the runs' consoles, oldest first, as one byte stream whose
offsets stay valid across restarts. A run resumed from a prewarm snapshot starts after its app
did (the snapshot was saved once the app was ready), so the snapshot's own console, what the app
printed while it started, goes in as that run's earlier part: ``logs`` shows a resumed instance's
start-up lines as it would a booted one's. The results file is never moved or truncated: the results
spool keeps byte offsets into it, and each run appends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ukedge.vmm import MachinePaths

__all__ = [
    "earlier_consoles",
    "keep_previous_run",
    "keep_snapshot_console",
    "machine_paths",
    "read_console",
    "read_results",
]

_LOGS = "logs"
#: The subdirectory of an instance's directory its machines run in (the backend's work
#: directory); the instance keeps its own files (launch archive, earlier runs' logs) beside it.
_MACHINE_DIR = "vm"
_CHUNK = 1 << 16


def machine_paths(workdir: Path) -> MachinePaths:
    """The files of the machine of the instance in ``workdir``, laid out as the backend
    contract says (:class:`~ukedge.vmm.MachinePaths`)."""
    return MachinePaths(workdir / _MACHINE_DIR)


def _console(workdir: Path) -> Path:
    return machine_paths(workdir).console


def _run_number(path: Path) -> int:
    """N of ``console.N.log`` (-1 for any other file)."""
    number = path.name.removeprefix("console.").removesuffix(".log")
    return int(number) if path.name.startswith("console.") and number.isdigit() else -1


def earlier_consoles(workdir: Path) -> list[Path]:
    """Consoles of the runs before the current one, oldest first."""
    found: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        found = [p for p in (workdir / _LOGS).iterdir() if _run_number(p) >= 0]
    return sorted(found, key=_run_number)


def keep_previous_run(workdir: Path) -> None:
    """Before a start: move the last run's console (and QEMU log) aside, and end the results
    with a newline, so that a line cut short by a crash does not swallow the next run's first."""
    paths = machine_paths(workdir)
    console = paths.console
    if console.exists():
        logs = workdir / _LOGS
        logs.mkdir(mode=0o700, exist_ok=True)
        earlier = earlier_consoles(workdir)
        number = _run_number(earlier[-1]) + 1 if earlier else 1
        if paths.log.exists():
            paths.log.replace(logs / f"qemu.{number:06d}.log")
        console.rename(logs / f"console.{number:06d}.log")
    with contextlib.suppress(FileNotFoundError), paths.results.open("rb+") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def keep_snapshot_console(workdir: Path, snapshot_console: Path) -> None:
    """Before a start resumed from a snapshot: its console (kept by the snapshot) becomes the
    next earlier run's, so this run's stream begins with the app's start-up output."""
    logs = workdir / _LOGS
    logs.mkdir(mode=0o700, exist_ok=True)
    earlier = earlier_consoles(workdir)
    number = _run_number(earlier[-1]) + 1 if earlier else 1
    target = logs / f"console.{number:06d}.log"
    staging = target.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):  # the snapshot was dropped meanwhile
        import shutil

        shutil.copyfile(snapshot_console, staging)
        staging.replace(target)


def read_results(workdir: Path, offset: int) -> Iterator[bytes]:
    """The results file from byte ``offset`` to its current end."""
    with contextlib.suppress(FileNotFoundError), machine_paths(workdir).results.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(_CHUNK):
            yield chunk


def read_console(workdir: Path, offset: int) -> Iterator[bytes]:
    """Bytes from ``offset`` of every run's console taken as one stream, to its current end.

    Earlier runs' files never change, so their sizes place the current one. The current file is
    opened, then the earlier ones are listed again: if a start moved it aside in between, the
    listing is read anew (the moved file keeps its bytes and its place in the stream).
    """
    while True:
        earlier = earlier_consoles(workdir)
        base = 0
        for path in earlier:
            size = path.stat().st_size
            if offset < base + size:
                with path.open("rb") as f:
                    f.seek(offset - base)
                    while offset < base + size and (
                        chunk := f.read(min(_CHUNK, base + size - offset))
                    ):
                        offset += len(chunk)
                        yield chunk
            base += size
        try:
            current = _console(workdir).open("rb")
        except FileNotFoundError:
            return
        with current:
            if earlier_consoles(workdir) != earlier:
                continue
            current.seek(max(0, offset - base))
            while chunk := current.read(_CHUNK):
                yield chunk
        return
