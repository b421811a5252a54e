"""Results of the node's apps: the durable spool, the forwarder tailing every instance's results
file into it, and the sinks it delivers to (``sinks``).

Loaded on first use (SQLAlchemy, paho): the CLI's local commands never need them.
"""

import typing

from ukedge._lazy import lazy_exports

__all__ = [
    "MAX_LINE_BYTES",
    "ForwardRound",
    "ResultForwarder",
    "ResultSource",
    "ResultSpool",
    "SpoolError",
    "manager_sources",
]

if typing.TYPE_CHECKING:
    from ukedge.host.results._forwarder import (
        ForwardRound,
        ResultForwarder,
        ResultSource,
        manager_sources,
    )
    from ukedge.host.results._spool import MAX_LINE_BYTES, ResultSpool, SpoolError

_LAZY = {
    "ForwardRound": "ukedge.host.results._forwarder",
    "ResultForwarder": "ukedge.host.results._forwarder",
    "ResultSource": "ukedge.host.results._forwarder",
    "manager_sources": "ukedge.host.results._forwarder",
    "MAX_LINE_BYTES": "ukedge.host.results._spool",
    "ResultSpool": "ukedge.host.results._spool",
    "SpoolError": "ukedge.host.results._spool",
}

__getattr__ = lazy_exports(globals(), _LAZY)
