"""Architecture names as deployments and nodes give them, read through one model.

Nodes report ``x86_64`` (``uname -m``) or, newer ones, an OCI platform (``linux/arm64``);
deployments may say ``--arch amd64``, ``--arch aarch64`` or ``linux/arm64/v8``; images carry OCI
platforms. Every comparison goes through :class:`ukedge.image.Platform`, so that all of these
name the same two platforms and there is no second table of names here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from ukedge.errors import ImageError
from ukedge.image import Platform, parse_platform

__all__ = ["any_matches", "platform_of", "require_platform"]


@functools.cache
def platform_of(text: str) -> Platform | None:
    """``x86_64``, ``amd64``, ``linux/arm64``… as a Platform; None for a name ukedge cannot run."""
    try:
        return parse_platform(text) if "/" in text else Platform.of_machine(text)
    except ImageError:
        return None


def require_platform(text: str, what: str) -> Platform:
    """:func:`platform_of`, or ValueError naming ``what`` and the accepted names."""
    found = platform_of(text)
    if found is None:
        raise ValueError(
            f"{what} {text!r} is not an architecture ukedge runs: use amd64 / x86_64, arm64 / "
            "aarch64, or an OCI platform such as linux/arm64"
        )
    return found


def any_matches(offered: Iterable[str], node: Platform) -> bool:
    """Whether one of the ``offered`` platforms (an image's, a deployment's) serves ``node``."""
    for text in offered:
        platform = platform_of(text)
        if platform is not None and platform.matches(node):
            return True
    return False
