"""Sinks picked by URL scheme, so configuration never imports a backend directly."""

from __future__ import annotations

from urllib.parse import urlsplit

from ukedge.backends import Backends, Factory
from ukedge.errors import UsageError
from ukedge.host.results.sinks.base import ResultSink

__all__ = ["create", "register", "sink_schemes"]

#: Factories get ``{"name": …, "url": …}``.
_SINKS: Backends[ResultSink] = Backends("result sink URL scheme")


def register(scheme: str, factory: Factory[ResultSink] | str) -> None:
    """Make ``create`` build URLs of ``scheme`` with ``factory`` (given ``name`` and ``url``)."""
    _SINKS.register(scheme, factory)


def sink_schemes() -> list[str]:
    return _SINKS.names()


def create(name: str, url: str) -> ResultSink:
    """The sink for ``url`` (``mqtt://broker:1883``), keyed in the spool as ``name``.

    ``name`` must stay the same across restarts: the spool remembers per name how far the sink
    got, so renaming a sink makes it start over from what the spool still holds.
    """
    if not name or not name.strip():
        raise UsageError("a result sink needs a non-empty name")
    return _SINKS.create(urlsplit(url).scheme, {"name": name, "url": url})
