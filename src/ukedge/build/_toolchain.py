"""Which C compiler builds guest code for a platform: the host's own, or Debian's cross gcc.

A guest of the host's architecture gets ``musl-gcc`` when installed (small static binaries),
else ``gcc``. Another architecture gets Debian's cross compiler named by its GNU triplet,
``<machine>-linux-gnu-gcc`` (``aarch64-linux-gnu-gcc`` from ``gcc-aarch64-linux-gnu``, with
``libc6-dev-arm64-cross`` for its static glibc): Debian ships no musl cross toolchain, so those
binaries are glibc static, larger but just as self-contained.
"""

from __future__ import annotations

import shutil

from ukedge.errors import BuildError
from ukedge.image import Platform, host_platform

__all__ = ["c_compiler", "cross_package", "is_native"]


def is_native(platform: Platform) -> bool:
    """Whether this host's own compiler targets ``platform``."""
    return platform.architecture == host_platform().architecture


def cross_package(platform: Platform) -> str:
    """The Debian package of the cross compiler for ``platform`` (gcc-aarch64-linux-gnu)."""
    return f"gcc-{platform.machine.replace('_', '-')}-linux-gnu"


def c_compiler(platform: Platform, *, what: str) -> str:
    """The compiler for static guest binaries of ``platform``; ``what`` names the caller's
    purpose in the error that says what to install."""
    if is_native(platform):
        for name in ("musl-gcc", "gcc", "cc"):
            found = shutil.which(name)
            if found:
                return found
        raise BuildError(
            f"no C compiler to build {what}: install musl-tools (musl-gcc) or build-essential"
        )
    name = f"{platform.machine}-linux-gnu-gcc"
    found = shutil.which(name)
    if found is None:
        raise BuildError(
            f"no cross compiler to build {what} for {platform}: {name} is not installed; "
            f"install Debian's {cross_package(platform)} and "
            f"libc6-dev-{platform.architecture}-cross"
        )
    return found
