"""Which accelerator QEMU can use here: KVM when it really boots a guest, else TCG.

``/dev/kvm`` existing is not enough: under nested virtualisation KVM may accept a VM and then
hang it as soon as the guest leaves real mode (this happens on the development machine). So
the probe boots a tiny guest that switches to 32-bit protected mode and reports through
``isa-debug-exit``; if QEMU does not exit with the expected status within a short timeout, it
is killed and TCG is chosen. The guest is ~60 bytes of machine code placed in a 64 KiB
firmware image, so the probe needs no kernel build.

On an arm64 host the probe guest is four AArch64 instructions that ask PSCI (through ``hvc``,
the conduit QEMU's ``virt`` machine gives a guest without EL2) to power off, which QEMU reports
as exit status 0.

KVM runs only guests of the host's own architecture: a guest of another one (an arm64 image on
an x86_64 node) is always emulated (:func:`accelerator_for`), whatever the probe says.

The verdict is cached in ``<cache>/accel.json``, keyed by what could change it (kernel
release, the QEMU binary, /dev/kvm and our access to it). ``UKEDGE_ACCEL=kvm|tcg`` overrides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ukedge import paths
from ukedge.errors import MachineError, UsageError

__all__ = [
    "AccelVerdict",
    "accelerator_for",
    "accelerators",
    "probe_accelerator",
    "qemu_binary",
    "qemu_version",
]

log = logging.getLogger(__name__)

Accel = Literal["kvm", "tcg"]

DEFAULT_BINARY = "qemu-system-x86_64"


def qemu_binary(machine: str) -> str:
    """QEMU's system emulator for guests of ``machine`` (``qemu-system-aarch64``)."""
    return f"qemu-system-{machine}"


def _host_machine() -> str:
    return platform.machine()


#: A guest that hangs longer than this under KVM is taken as "KVM does not work here". A
#: working KVM finishes the probe in well under 0.2 s including QEMU's start-up.
PROBE_TIMEOUT = 2.5

# Assembled from (GNU as, .code16, loaded at F000:0000):
#   cli; xor ax,ax; mov ds,ax; lgdtl cs:gdtr; mov eax,cr0; or eax,1; mov cr0,eax
#   ljmpl 0x08:(0xF0000+pm32)
#   pm32 (.code32): mov ax,0x10; mov ds,ax; mov ss,ax; mov al,1; out 0xf4,al; 1: hlt; jmp 1b
#   gdt: null, code 0x00CF9A000000FFFF, data 0x00CF92000000FFFF; gdtr: limit, 0xF0000+gdt
_PROBE_CODE = bytes.fromhex(
    "fa31c08ed82e660f011648000f20c06683c8010f22c066ea1e000f000800"
    "66b810008ed88ed0b001e6f4f4ebfd8d76000000000000000000ffff0000"
    "009acf00ffff00000092cf00170030000f00"
)
#: Reset vector (F000:FFF0): ljmp F000:0000.
_RESET_JUMP = bytes([0xEA, 0x00, 0x00, 0x00, 0xF0])
#: isa-debug-exit turns the value 1 written by the probe into QEMU exit status (1 << 1) | 1.
_PROBE_OK_STATUS = 3
#: The arm64 probe at the reset address of ``virt``'s flash: movz w0, #0x8; movk w0, #0x8400,
#: lsl #16 (PSCI SYSTEM_OFF, 0x84000008); hvc #0; b . -- QEMU exits with status 0.
_PROBE_CODE_AARCH64 = b"".join(
    word.to_bytes(4, "little") for word in (0x52800100, 0x72B08000, 0xD4000002, 0x14000000)
)


@dataclass(frozen=True, slots=True)
class AccelVerdict:
    """The accelerator machines will use, and why."""

    accel: Accel
    reason: str
    #: ``probe`` (measured now), ``cache`` (measured earlier on this host), ``env`` (override).
    #: ``architecture``: the guest is not of the host's architecture, so it is emulated.
    source: Literal["probe", "cache", "env", "architecture"]
    qemu_version: str = ""

    @property
    def notice(self) -> str | None:
        """One line for the CLI to show when machines will run slowly under TCG."""
        if self.accel == "kvm":
            return None
        return f"notice: running VMs without KVM (TCG emulation, slower): {self.reason}"


def probe_firmware(machine: str = "x86_64") -> bytes:
    """The 64 KiB firmware image of the probe guest for ``machine``."""
    if machine == "aarch64":
        return _PROBE_CODE_AARCH64 + bytes(0x10000 - len(_PROBE_CODE_AARCH64))
    image = bytearray(b"\xf4" * 0x10000)  # hlt everywhere else
    image[: len(_PROBE_CODE)] = _PROBE_CODE
    image[0xFFF0 : 0xFFF0 + len(_RESET_JUMP)] = _RESET_JUMP
    return bytes(image)


def qemu_version(binary: str = DEFAULT_BINARY) -> str:
    """QEMU's version line (e.g. ``QEMU emulator version 7.2.22 (Debian ...)``)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except FileNotFoundError:
        raise MachineError(
            f"{binary} not found; install QEMU ({_debian_package(binary)})"
        ) from None
    except (subprocess.SubprocessError, OSError) as exc:
        raise MachineError(f"cannot run {binary} --version: {exc}") from exc
    return out.splitlines()[0].strip() if out else ""


def _binary_path(binary: str) -> Path:
    from shutil import which

    found = which(binary)
    if not found:
        raise MachineError(f"{binary} not found; install QEMU ({_debian_package(binary)})")
    return Path(found).resolve()


def _debian_package(binary: str) -> str:
    package = "qemu-system-arm" if "aarch64" in Path(binary).name else "qemu-system-x86"
    return f"Debian: apt-get install {package}"


def host_key(binary: str = DEFAULT_BINARY) -> dict[str, Any]:
    """What the verdict depends on; a change of any of it re-runs the probe."""
    exe = _binary_path(binary)
    st = exe.stat()
    kvm: dict[str, Any] = {"exists": False}
    with contextlib.suppress(OSError):
        kst = Path("/dev/kvm").stat()
        kvm = {
            "exists": True,
            "rdev": kst.st_rdev,
            "mode": kst.st_mode,
            "uid": kst.st_uid,
            "gid": kst.st_gid,
            "rw": os.access("/dev/kvm", os.R_OK | os.W_OK),
        }
    return {
        "kernel_release": os.uname().release,
        "qemu": {"path": str(exe), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        "kvm": kvm,
        "euid": os.geteuid(),
    }


def _cache_file() -> Path:
    return paths.cache_dir() / "accel.json"


def _read_cache(key: dict[str, Any]) -> AccelVerdict | None:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    verdict = data.get("verdict", {})
    if verdict.get("accel") not in ("kvm", "tcg"):
        return None
    return AccelVerdict(
        accel=verdict["accel"],
        reason=str(verdict.get("reason", "")),
        source="cache",
        qemu_version=str(verdict.get("qemu_version", "")),
    )


def _write_cache(key: dict[str, Any], verdict: AccelVerdict) -> None:
    target = _cache_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"key": key, "verdict": asdict(verdict)}, indent=2, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".accel.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_probe(
    binary: str,
    accel: Accel,
    timeout: float = PROBE_TIMEOUT,
    cpu: str | None = None,
    machine: str = "x86_64",
) -> tuple[bool, str]:
    """Boot the probe guest of ``machine`` under ``accel``; (works, why) with a one-line reason.

    ``cpu`` defaults to the model machines use with that accelerator (``host`` under KVM).
    """
    with tempfile.TemporaryDirectory(prefix="ukedge-probe-") as tmp:
        firmware = Path(tmp) / "probe.bin"
        firmware.write_bytes(probe_firmware(machine))
        argv = [binary, "-nodefaults", "-no-user-config", "-display", "none"]
        if machine == "aarch64":
            argv += ["-M", "virt"]
            ok_status = 0
        else:
            argv += ["-M", "pc", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
            ok_status = _PROBE_OK_STATUS
        argv += [
            "-accel",
            accel,
            "-cpu",
            cpu or ("host" if accel == "kvm" else "max"),
            "-m",
            "16",
            "-bios",
            str(firmware),
        ]
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return False, f"a {accel.upper()} test VM hung for {timeout:g} s (nested KVM?)"
        took = time.monotonic() - started
        if proc.returncode == ok_status:
            return True, f"a {accel.upper()} test VM ran in {took * 1000:.0f} ms"
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        return False, f"a {accel.upper()} test VM failed: {why}"


def _kvm_usable() -> str | None:
    """Why KVM cannot even be tried, or None."""
    if not Path("/dev/kvm").exists():
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no read/write access to /dev/kvm (add the user to the kvm group)"
    return None


def accelerator_for(
    architecture: str, *, binary: str | None = None, force: bool = False
) -> AccelVerdict:
    """The accelerator for guests of ``architecture`` (a machine name): TCG for one that is
    not the host's (KVM cannot run it), else :func:`probe_accelerator`'s verdict."""
    host = _host_machine()
    if architecture != host:
        return AccelVerdict(
            accel="tcg",
            reason=f"the guest is {architecture} and this host {host}: emulated",
            source="architecture",
        )
    return probe_accelerator(force, binary=binary)


def probe_accelerator(
    force: bool = False, *, binary: str | None = None, timeout: float = PROBE_TIMEOUT
) -> AccelVerdict:
    """The accelerator for guests of the host's architecture: the env override, else the
    cache, else a probe with ``binary`` (default: QEMU of the host's architecture).

    ``force`` ignores the cache (``ukedge doctor --probe``). The probe costs up to ``timeout``
    seconds once per host; later calls read the cache.
    """
    machine = _host_machine()
    binary = binary or qemu_binary(machine)
    override = os.environ.get("UKEDGE_ACCEL", "").strip().lower()
    if override:
        if override not in ("kvm", "tcg"):
            raise UsageError(f"UKEDGE_ACCEL must be kvm or tcg, got {override!r}")
        return AccelVerdict(
            accel="kvm" if override == "kvm" else "tcg",
            reason="set by UKEDGE_ACCEL",
            source="env",
        )
    key = host_key(binary)
    if not force:
        cached = _read_cache(key)
        if cached is not None:
            return cached
    version = qemu_version(binary)
    blocked = _kvm_usable()
    if blocked is None:
        works, reason = run_probe(binary, "kvm", timeout, machine=machine)
        accel: Accel = "kvm" if works else "tcg"
    else:
        accel, reason = "tcg", blocked
    verdict = AccelVerdict(accel=accel, reason=reason, source="probe", qemu_version=version)
    log.info("accelerator probe: %s (%s)", accel, reason)
    try:
        _write_cache(key, verdict)
    except OSError as exc:
        log.warning("cannot cache the accelerator verdict in %s: %s", _cache_file(), exc)
    return verdict


def accelerators() -> dict[str, Accel]:
    """The accelerator for each platform this host can run (``{"linux/amd64": "kvm",
    "linux/arm64": "tcg"}``), from :func:`accelerator_for` (the probe's verdict for the host's
    own architecture, TCG for another); a platform whose ``qemu-system-<machine>`` is not
    installed is left out."""
    import shutil

    from ukedge.image import SUPPORTED_PLATFORMS

    found: dict[str, Accel] = {}
    for target in SUPPORTED_PLATFORMS:
        binary = qemu_binary(target.machine)
        if shutil.which(binary) is not None:
            found[str(target)] = accelerator_for(target.machine, binary=binary).accel
    return found
