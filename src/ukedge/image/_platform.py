"""OCI platforms (``os/architecture[/variant]``) and the machine names the host side uses.

OCI and Go name architectures ``amd64`` and ``arm64``; the kernel, QEMU's binaries and
``uname -m`` say ``x86_64`` and ``aarch64``. Nodes report the latter and images carry the
former, so every comparison goes through this one model instead of string tables in each
package (the mismatch is what makes nodes pull the wrong architecture elsewhere).
"""

from __future__ import annotations

import functools
import platform as _host
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ukedge.errors import ImageError

__all__ = [
    "SUPPORTED_PLATFORMS",
    "Architecture",
    "Platform",
    "host_platform",
    "parse_platform",
    "parse_platforms",
]

Architecture = Literal["amd64", "arm64"]

#: OCI architecture -> the machine name of ``uname -m`` and ``qemu-system-<machine>``.
_MACHINES: dict[str, str] = {"amd64": "x86_64", "arm64": "aarch64"}
#: Variants implied when an architecture has one and a platform omits it (OCI's rule for arm64).
_DEFAULT_VARIANTS: dict[str, str] = {"arm64": "v8"}


class Platform(BaseModel):
    """The ``platform`` object of an OCI index entry; unknown fields (``os.features``) are kept."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, defer_build=True)

    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = Field(default=None, alias="os.version")

    def __str__(self) -> str:
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    @property
    def machine(self) -> str:
        """``uname -m`` of a host of this platform (``x86_64``); ImageError if ukedge has none."""
        try:
            return _MACHINES[self.architecture]
        except KeyError:
            raise ImageError(
                f"platform {self}: ukedge runs linux/amd64 and linux/arm64 only"
            ) from None

    def matches(self, wanted: Platform) -> bool:
        """Whether this (an image's) platform serves ``wanted`` (a node's or a user's).

        A variant left out on either side is the architecture's default one, as OCI's
        platform matching has it, so ``linux/arm64`` and ``linux/arm64/v8`` are one platform.
        """
        if (self.os, self.architecture) != (wanted.os, wanted.architecture):
            return False
        default = _DEFAULT_VARIANTS.get(self.architecture)
        return (self.variant or default) == (wanted.variant or default)

    def explicit(self) -> Platform:
        """This platform with its architecture's default variant written out (``linux/arm64/v8``),
        as an index entry states it so that strict matchers agree with OCI's rule."""
        default = _DEFAULT_VARIANTS.get(self.architecture)
        if self.variant or default is None:
            return self
        return self.model_copy(update={"variant": default})

    @classmethod
    def of_machine(cls, machine: str) -> Platform:
        """The Linux platform of a ``uname -m`` name; ImageError for one ukedge cannot run."""
        for arch, name in _MACHINES.items():
            if machine in (name, arch):
                return cls(os="linux", architecture=arch)
        raise ImageError(
            f"machine {machine!r} is not supported: ukedge runs on "
            f"{' and '.join(_MACHINES.values())} only"
        )


def parse_platform(text: str) -> Platform:
    """``linux/arm64``, ``linux/arm64/v8`` or ``arm64`` (Linux implied) as a :class:`Platform`."""
    parts = text.strip().split("/")
    if len(parts) == 1:
        parts.insert(0, "linux")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ImageError(f"platform {text!r} is not OS/ARCH[/VARIANT], e.g. linux/arm64")
    os_name, arch = parts[0], parts[1]
    if os_name != "linux":
        raise ImageError(f"platform {text!r}: unikernels here are Linux guests (linux/…)")
    if arch not in _MACHINES:
        if arch in _MACHINES.values():
            hint = next(a for a, m in _MACHINES.items() if m == arch)
            raise ImageError(f"platform {text!r}: OCI calls {arch} {hint!r} (linux/{hint})")
        raise ImageError(
            f"platform {text!r}: unsupported architecture {arch!r} "
            f"(supported: {', '.join(str(p) for p in SUPPORTED_PLATFORMS)})"
        )
    return Platform(os=os_name, architecture=arch, variant=parts[2] if len(parts) == 3 else None)


def parse_platforms(text: str) -> list[Platform]:
    """A comma-separated ``--platform`` list, in order, without repeats."""
    found: list[Platform] = []
    for item in text.split(","):
        if not item.strip():
            raise ImageError(f"platform list {text!r} has an empty entry")
        platform = parse_platform(item)
        if any(platform.matches(p) for p in found):
            raise ImageError(f"platform list {text!r} names {platform} twice")
        found.append(platform)
    return found


SUPPORTED_PLATFORMS: tuple[Platform, ...] = tuple(
    Platform(os="linux", architecture=arch) for arch in _MACHINES
)


@functools.cache
def host_platform() -> Platform:
    """The platform of the machine this runs on (asked once: it does not change)."""
    return Platform.of_machine(_host.machine())
