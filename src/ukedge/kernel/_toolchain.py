"""The toolchain of each architecture a kernel is built for: make's ``ARCH``, Debian's cross
compiler and where the boot image lands, and the compiler's identity (part of the cache key).

Apart from the build because the cache needs it too: a cached kernel's boot image is found by
its architecture's image name, and its key names the compiler that built it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from ukedge.errors import KernelError
from ukedge.image import host_platform

__all__ = ["TARGETS", "Target", "compiler_id", "cross_prefix", "target"]


@dataclass(frozen=True)
class Target:
    """How to build for one OCI architecture."""

    #: ``make ARCH=``.
    arch: str
    #: ``make CROSS_COMPILE=`` when the host is another architecture (Debian's cross gcc).
    cross_compile: str
    #: The make target and where it leaves the boot image, and its name in the cache.
    image_target: str
    image_path: str
    image_name: str
    #: The Debian package that provides the cross compiler, for the error that asks for it.
    cross_package: str


TARGETS: dict[str, Target] = {
    "amd64": Target(
        "x86_64",
        "x86_64-linux-gnu-",
        "bzImage",
        "arch/x86/boot/bzImage",
        "bzImage",
        "gcc-x86-64-linux-gnu",
    ),
    "arm64": Target(
        "arm64",
        "aarch64-linux-gnu-",
        "Image",
        "arch/arm64/boot/Image",
        "Image",
        "gcc-aarch64-linux-gnu",
    ),
}


def target(architecture: str) -> Target:
    try:
        return TARGETS[architecture]
    except KeyError:
        raise KernelError(
            f"no kernel build for architecture {architecture!r} (known: {', '.join(TARGETS)})"
        ) from None


def cross_prefix(architecture: str) -> str:
    """``CROSS_COMPILE`` for ``architecture``: empty when this host runs it natively."""
    if host_platform().architecture == architecture:
        return ""
    return target(architecture).cross_compile


def compiler_id(architecture: str = "amd64") -> str:
    gcc = f"{cross_prefix(architecture)}gcc"
    try:
        proc = subprocess.run([gcc, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        hint = ""
        if gcc != "gcc":
            package = target(architecture).cross_package
            hint = f"; install Debian's cross compiler: apt-get install {package}"
        raise KernelError(
            f"cannot run {gcc} to build the {architecture} kernel: {exc}{hint}"
        ) from exc
    return proc.stdout.splitlines()[0] if proc.stdout else gcc
