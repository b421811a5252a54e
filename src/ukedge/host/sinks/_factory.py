"""Sinks picked by URL scheme, so configuration never imports a backend directly."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from ukedge.errors import UsageError
from ukedge.host.sinks.base import ResultSink

__all__ = ["create", "register", "sink_schemes"]

#: ``(name, url) -> sink`` per URL scheme.
SinkFactory = Callable[[str, str], ResultSink]

_FACTORIES: dict[str, SinkFactory] = {}


def register(scheme: str, factory: SinkFactory) -> None:
    """Make ``create`` build URLs of ``scheme`` with ``factory``."""
    _FACTORIES[scheme] = factory


def sink_schemes() -> list[str]:
    return sorted(_FACTORIES)


def create(name: str, url: str) -> ResultSink:
    """The sink for ``url`` (``mqtt://broker:1883``), keyed in the spool as ``name``.

    ``name`` must stay the same across restarts: the spool remembers per name how far the sink
    got, so renaming a sink makes it start over from what the spool still holds.
    """
    if not name or not name.strip():
        raise UsageError("a result sink needs a non-empty name")
    scheme = urlsplit(url).scheme
    try:
        factory = _FACTORIES[scheme]
    except KeyError:
        raise UsageError(
            f"unknown result sink URL {url!r}: supported schemes are "
            f"{', '.join(s + '://' for s in sink_schemes())}"
        ) from None
    return factory(name, url)
