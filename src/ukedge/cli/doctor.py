"""``ukedge doctor``: what this host offers for running unikernels, and what is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from ukedge import paths
from ukedge.cli._console import print_json, print_table
from ukedge.errors import UkedgeError
from ukedge.units import format_size

__all__ = ["doctor", "register"]


def _meminfo() -> dict[str, int]:
    fields: dict[str, int] = {}
    with Path("/proc/meminfo").open() as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
    return fields


#: The table's accelerator line keeps the reason's gist; QEMU's own words are in --json.
_GIST_MAX = 60


def _gist(reason: str) -> str:
    """``a KVM test VM failed`` for ``a KVM test VM failed: <170 columns of QEMU assertion>``."""
    if len(reason) <= _GIST_MAX:
        return reason
    head = reason.split(": ", 1)[0]
    return f"{head[:_GIST_MAX]}; QEMU's message in `ukedge doctor --json`"


def doctor(
    probe: Annotated[
        bool, typer.Option("--probe", help="Probe KVM again instead of using the cached verdict.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Check QEMU, the accelerator (KVM or TCG), the platforms this host runs, built kernels,
    tools and memory."""
    from ukedge.host import qemu_from_env
    from ukedge.kernel import list_kernels
    from ukedge.vmm import accelerators, probe_accelerator, qemu_version

    checks: dict[str, Any] = {}
    try:
        named = qemu_from_env()  # the node's own build, if UKEDGE_QEMU names one
        version = qemu_version(named) if named else qemu_version()
        checks["qemu"] = f"{version} (UKEDGE_QEMU: {named})" if named else version
    except UkedgeError as exc:
        checks["qemu"] = f"MISSING: {exc}"
    verdict = probe_accelerator(force=probe)
    reason = verdict.reason if as_json else _gist(verdict.reason)
    checks["accelerator"] = f"{verdict.accel} ({verdict.source}: {reason})"
    # Each platform this host can run images of (its qemu-system-<machine> installed): the
    # host's own with the probe's accelerator, another architecture emulated under TCG.
    checks["platforms"] = (
        ", ".join(f"{name}: {accel}" for name, accel in accelerators().items())
        or "none: no qemu-system-* installed"
    )
    kernels = list_kernels()
    checks["kernels"] = ", ".join(
        f"{k.profile} {k.version} {k.architecture} ({k.key[:12]})" for k in kernels
    ) or ("none built yet: run `ukedge kernel build`")
    checks["static C compiler"] = shutil.which("musl-gcc") or shutil.which("gcc") or "MISSING"
    checks["skopeo"] = shutil.which("skopeo") or "not installed (only interop tests need it)"
    mem = _meminfo()
    checks["memory"] = (
        f"{format_size(mem['MemAvailable'])} available of {format_size(mem['MemTotal'])}"
    )
    checks["cpus"] = os.cpu_count()
    checks["home"] = str(paths.home())
    checks["cache"] = str(paths.cache_dir())
    if as_json:
        print_json(checks)
    else:
        print_table(["CHECK", "RESULT"], list(checks.items()))


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
