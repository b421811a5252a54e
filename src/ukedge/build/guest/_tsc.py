"""The host's TSC frequency, for the guest's ``tsc_early_khz=`` parameter.

Under TCG the guest's TSC runs at the host's TSC rate. A guest told that rate skips its own
calibration against the PIT, which under emulation costs tens of milliseconds and often fails,
leaving the guest on the 10 ms jiffies clock (coarse ``time.monotonic()``, no vDSO). The rate is
measured once per host boot with a tiny C program (``tsc.c``) and cached; a host whose TSC is not
invariant (no ``constant_tsc``/``nonstop_tsc``) or whose rounds disagree gets ``None``, and the
guest then calibrates itself as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from ukedge import paths

__all__ = ["host_tsc_khz"]

log = logging.getLogger(__name__)

#: Rounds must agree this closely (relative) for the number to be trusted.
_TOLERANCE = 0.002


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _invariant_tsc() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return " constant_tsc" in flags and " nonstop_tsc" in flags


def _measure_binary(root: Path) -> Path | None:
    source = resources.files("ukedge.build.guest").joinpath("tsc.c").read_bytes()
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    key = hashlib.sha256(source + cc.encode()).hexdigest()[:16]
    binary = root / f"tsc-{key}"
    if binary.is_file():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        src = Path(tmp) / "tsc.c"
        src.write_bytes(source)
        out = Path(tmp) / "tsc"
        proc = subprocess.run(
            [cc, "-O2", "-o", str(out), str(src)], capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            log.warning("cannot compile the TSC probe: %s", proc.stderr.strip())
            return None
        out.replace(binary)
    return binary


def _measure(root: Path) -> int | None:
    binary = _measure_binary(root)
    if binary is None:
        return None
    try:
        proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30, check=True)
        rounds = [float(x) for x in proc.stdout.split()]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("TSC probe failed: %s", exc)
        return None
    if len(rounds) < 3 or min(rounds) <= 0:
        return None
    if (max(rounds) - min(rounds)) / max(rounds) > _TOLERANCE:
        log.info("TSC probe rounds disagree (%s); not passing tsc_early_khz", rounds)
        return None
    return round(statistics.median(rounds))


def host_tsc_khz() -> int | None:
    """The host's invariant TSC rate in kHz, or None when it cannot be trusted."""
    if platform.machine() not in ("x86_64", "AMD64") or not _invariant_tsc():
        return None
    root = paths.cache_dir() / "tsc"
    cached = root / f"{_boot_id()}.json"
    try:
        value = json.loads(cached.read_text())["khz"]
        return int(value) if value else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    khz = _measure(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"khz": khz}))
    tmp.replace(cached)
    return khz
