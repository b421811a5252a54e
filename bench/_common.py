"""What the benchmarks share, one copy so every one of them sets up, waits and summarises the
same way: a throw-away home over the machine's cache of built kernels and runtime layers, the
instance manager ``ukedge run`` uses, a free port, waiting for an app's HTTP answer or for a
condition, and the min/median/max of samples.

bench/ is not a package: a script run from it (``python bench/boot.py``) has it on the path, and
``python -m compare`` runs with it on ``PYTHONPATH``, so both import this as ``_common``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ukedge import paths, vmm
from ukedge.host import InstanceManager, UnpackedLayers
from ukedge.image import ImageStore
from ukedge.loopback import free_port

__all__ = [
    "SLIM_QEMU",
    "add_slim_qemu_option",
    "bench_home",
    "free_port",
    "instance_manager",
    "slim_qemu",
    "spread",
    "until",
    "wait_http",
]

#: The QEMU ``make qemu-slim`` builds, which the boot and density benches measure beside
#: Debian's when it is there.
SLIM_QEMU = paths.slim_qemu()


def add_slim_qemu_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--slim-qemu",
        type=Path,
        default=SLIM_QEMU,
        help="QEMU of the slim rows (default: what `make qemu-slim` built, if it did)",
    )


def slim_qemu(parser: argparse.ArgumentParser, given: Path) -> Path | None:
    """The ``--slim-qemu`` to measure, or None (and a line saying so) when ``make qemu-slim``
    has not built one; a path given by hand must exist."""
    if given.is_file():
        return given
    if given != SLIM_QEMU:
        parser.error(f"--slim-qemu {given}: no such file")
    print(f"no slim QEMU at {SLIM_QEMU} (make qemu-slim): slim rows left out", file=sys.stderr)
    return None


def bench_home(work: Path) -> None:
    """A throw-away ``UKEDGE_HOME`` under ``work``, but the machine's cache: the built kernel
    and runtime layers are reused, not rebuilt for every run."""
    os.environ["UKEDGE_CACHE"] = str(paths.cache_dir())
    os.environ["UKEDGE_HOME"] = str(work / "home")


def instance_manager(
    root: Path,
    store: ImageStore,
    options: dict[str, Any] | None = None,
    *,
    shared_runtime: bool = False,
) -> InstanceManager:
    """The instance manager ``ukedge run`` uses, its instances under ``root``, on the QEMU
    backend with ``options`` (its own root: its own prewarm snapshots); ``shared_runtime``
    serves runtime layers from an erofs image instead of the initramfs."""
    return InstanceManager(
        root,
        store,
        vmm.create("qemu", options),
        UnpackedLayers(paths.cache_dir() / "unpacked", shared_runtime=shared_runtime),
    )


def wait_http(
    url: str,
    deadline_s: float = 60.0,
    alive: Callable[[], bool] = lambda: True,
    *,
    request_timeout: float = 2.0,
) -> None:
    """Poll ``url`` until it answers 200; fail early when ``alive`` says the app died.

    ``request_timeout`` bounds a request QEMU accepted before the guest listens (it hangs until
    then), so it is part of what a boot-to-ready figure measures: keep it per benchmark."""
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=request_timeout) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if not alive():
                raise RuntimeError(f"{url}: the instance ended before it answered")
            time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer within {deadline_s:.0f} s")


def until(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    """Poll ``predicate`` every ``every`` s; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout:g} s")
        time.sleep(every)


def spread(samples: list[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}
