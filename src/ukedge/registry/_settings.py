"""Which registry a reference talks to, and whether it speaks plain HTTP.

A reference without a registry host (``app:1``) names a local image. Commands that talk to a
registry need one: from the reference (``127.0.0.1:5000/app:1``), or from ``UKEDGE_REGISTRY``
(``UKEDGE_REGISTRY=hub.example:5000 ukedge push app:1`` pushes to ``hub.example:5000/app:1``).
Registries on the loopback interface are spoken to over plain HTTP, as docker does; any other
registry over HTTPS unless it is listed in ``UKEDGE_INSECURE_REGISTRIES`` (comma-separated) or
the caller passes ``insecure=True``.
"""

from __future__ import annotations

import os

from ukedge.errors import UsageError
from ukedge.image import Reference, parse_reference

__all__ = [
    "DEFAULT_PLATFORM",
    "DEFAULT_REGISTRY_ENV",
    "INSECURE_REGISTRIES_ENV",
    "default_registry",
    "is_insecure",
    "registry_url",
    "remote_reference",
]

#: The platform pulled from a multi-platform image unless another is asked for.
DEFAULT_PLATFORM = "linux/amd64"
DEFAULT_REGISTRY_ENV = "UKEDGE_REGISTRY"
INSECURE_REGISTRIES_ENV = "UKEDGE_INSECURE_REGISTRIES"
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def default_registry() -> str | None:
    value = os.environ.get(DEFAULT_REGISTRY_ENV, "").strip()
    if not value:
        return None
    value = value.removeprefix("https://").removeprefix("http://").rstrip("/")
    if parse_reference(f"{value}/x").registry != value:
        raise UsageError(
            f"{DEFAULT_REGISTRY_ENV}={value!r} is not a registry host: give HOST:PORT, a name "
            "with a dot, or localhost (a bare word reads as part of a repository name)"
        )
    return value


def _host(registry: str) -> str:
    if registry.startswith("["):
        return registry[: registry.find("]") + 1]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_insecure(registry: str, insecure: bool | None = None) -> bool:
    """Plain HTTP for loopback, listed registries, or when asked; HTTPS otherwise."""
    if insecure is not None:
        return insecure
    host = _host(registry)
    if host in _LOOPBACK or host.startswith("127."):
        return True
    listed = os.environ.get(INSECURE_REGISTRIES_ENV, "")
    return registry in {item.strip() for item in listed.split(",") if item.strip()}


def registry_url(registry: str, insecure: bool | None = None) -> str:
    scheme = "http" if is_insecure(registry, insecure) else "https"
    return f"{scheme}://{registry}"


def remote_reference(text: str, *, action: str = "pull") -> Reference:
    """Parse ``text`` as a reference on a registry; ``UKEDGE_REGISTRY`` fills in a missing host."""
    ref = parse_reference(text)
    if ref.registry:
        return ref
    default = default_registry()
    if default is None:
        raise UsageError(
            f"{text!r} names no registry: {action} needs HOST[:PORT]/NAME:TAG "
            f"(e.g. 127.0.0.1:5000/{ref.repository}:{ref.tag or 'latest'}), "
            f"or set {DEFAULT_REGISTRY_ENV}=HOST[:PORT] to use a default registry"
        )
    return parse_reference(f"{default}/{text}")
