"""Prewarm snapshots: ready guests saved once so later runs of the same plan resume them.

A node keeps them in one directory, one subdirectory per plan key (:class:`Plan.key`), each
naming the image it was made from (so removing an image drops its snapshots). A snapshot is
written under a staging name of its own and renamed into place, so a prewarm killed mid-way
leaves only a ``.<key>.*.tmp`` directory, which :func:`sweep_staging` deletes.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

from ukedge.errors import InstanceError, UkedgeError
from ukedge.faults import crash_point
from ukedge.guest import HELD_LINE, is_held
from ukedge.host._models import PortMapping
from ukedge.host.instances._health import wait_healthy
from ukedge.host.instances._plan import Plan, machine_spec
from ukedge.host.instances._ports import free_port
from ukedge.image import HealthCheck
from ukedge.vmm import Machine, MachineBackend

__all__ = [
    "check_snapshottable",
    "drop_snapshots",
    "find_snapshot",
    "make_snapshot",
    "snapshot_console",
    "sweep_staging",
]

#: In a snapshot directory: the manifest digest of the image it was made from.
_SNAPSHOT_IMAGE = "image"
#: In a snapshot directory: the console of the boot it was saved from (the app's start-up output).
_SNAPSHOT_CONSOLE = "console.log"


def snapshot_console(snapshot: Path) -> Path:
    """What the snapshot's guest printed before it was saved (absent in older snapshots)."""
    return snapshot / _SNAPSHOT_CONSOLE


def find_snapshot(snapshots: Path, key: str) -> Path | None:
    """The plan's snapshot, if one was saved with its console (older ones are not resumed:
    their runs would show none of the app's start-up output; the next prewarm replaces them)."""
    path = snapshots / key
    return path if snapshot_console(path).is_file() else None


def check_snapshottable(plan: Plan) -> None:
    """Refuse to prewarm an image that cannot be cloned or has no moment known to be ready."""
    if plan.config.snapshot == "off":
        raise InstanceError(
            f'{plan.image.ref} is built with snapshot = "off" in its Ukfile: its app '
            "cannot be cloned, so every run boots"
        )
    if plan.config.healthcheck is None and plan.config.snapshot != "pre-app":
        raise InstanceError(
            f"{plan.image.ref} has no health check, so there is no moment at which its app is "
            "known to be ready to snapshot; add [healthcheck] to its Ukfile"
        )


def make_snapshot(
    backend: MachineBackend,
    snapshots: Path,
    workdir: Path,
    plan: Plan,
    timeout: float,
) -> Path:
    """Boot ``plan`` in ``workdir`` until it is ready (its health check passes, or with
    ``snapshot = "pre-app"`` until init holds before the app) and save it as the plan's
    snapshot. Returns the snapshot directory; a concurrent prewarm's that won is as good."""
    check = plan.config.healthcheck
    pre_app = plan.config.snapshot == "pre-app"
    target = snapshots / plan.key
    port = free_port()
    forwards = [] if check is None else [PortMapping(host_port=port, guest_port=check.port)]
    spec = machine_spec(
        plan, workdir.name[1:], workdir, forwards, None, snapshot_source=True, hold=pre_app
    )
    # Names of its own: two prewarms of one image (two REST calls) may run at once.
    staging = Path(tempfile.mkdtemp(dir=snapshots, prefix=f".{plan.key}.", suffix=".tmp"))
    try:
        machine = backend.start(spec)
        crash_point("host.prewarm.after_boot")
        try:
            if pre_app:
                _wait_held(machine, timeout)
            else:
                assert check is not None
                _wait_ready(machine, check, port, timeout)
            machine.snapshot(staging)
            shutil.copyfile(machine.console_path, snapshot_console(staging))
            (staging / _SNAPSHOT_IMAGE).write_text(plan.image.digest)
            crash_point("host.prewarm.after_snapshot")
        finally:
            with contextlib.suppress(UkedgeError):
                machine.kill()
        if target.is_dir() and find_snapshot(snapshots, plan.key) is None:
            shutil.rmtree(target, ignore_errors=True)  # made before snapshots kept consoles
        try:
            staging.replace(target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # The other prewarm finished first; its snapshot is as good as this one.
        crash_point("host.prewarm.after_rename")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return target


def _wait_ready(machine: Machine, check: HealthCheck, port: int, timeout: float) -> None:
    wait_healthy(check, "127.0.0.1", port, timeout=timeout, alive=lambda: not machine.state.final)


def _wait_held(machine: Machine, timeout: float) -> None:
    """Wait until the guest init, booted with ``hold``, waits before starting the app."""
    deadline = time.monotonic() + timeout
    while not is_held(machine.console_path.read_text(errors="replace")):
        if machine.state.final or time.monotonic() > deadline:
            raise InstanceError(
                f"machine {machine.machine_id} never reached the point before its app starts "
                f"(no {HELD_LINE!r} on its console within {timeout:g} s); see its console"
            )
        time.sleep(0.05)


def sweep_staging(snapshots: Path, *, prewarm_running: bool, older_than_s: float) -> int:
    """Delete half-written snapshots: all of them when no prewarm runs, else those older than
    any prewarm's time limit. Returns how many went."""
    if not snapshots.is_dir():
        return 0
    swept = 0
    cutoff = time.time() - older_than_s
    for path in snapshots.glob(".*.tmp"):
        try:
            if prewarm_running and path.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        swept += 1
    return swept


def drop_snapshots(snapshots: Path, image_digests: Collection[str]) -> list[Path]:
    """Delete the snapshots of these images. Returns what went."""
    dropped: list[Path] = []
    if not snapshots.is_dir():
        return dropped
    for path in snapshots.iterdir():
        try:
            digest = (path / _SNAPSHOT_IMAGE).read_text().strip()
        except OSError:
            continue  # staging, or made before snapshots named their image
        if digest in image_digests:
            shutil.rmtree(path, ignore_errors=True)
            dropped.append(path)
    return dropped
