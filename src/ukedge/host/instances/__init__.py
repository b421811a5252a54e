"""Instances of one node: the manager (the one lifecycle implementation), its records, the
supervisor's health probes and restart policy, admission against the node's capacity, and the
files a run leaves (console, results, prewarm snapshots).

Names load with their module on first use: reading the records as stored (``instance_docs``)
and asking whether one is current (``record_settled``) need neither the manager nor pydantic.
"""

import typing

from ukedge._lazy import lazy_exports

__all__ = [
    "Capacity",
    "Committed",
    "InstanceManager",
    "check_once",
    "host_capacity",
    "instance_docs",
    "listed_instances",
    "record_settled",
    "wait_healthy",
]

if typing.TYPE_CHECKING:
    from ukedge.host.instances._admission import Capacity, Committed, host_capacity
    from ukedge.host.instances._health import check_once, wait_healthy
    from ukedge.host.instances._manager import InstanceManager
    from ukedge.host.instances._records import instance_docs, listed_instances
    from ukedge.host.instances._settled import record_settled

_LAZY = {
    "Capacity": "ukedge.host.instances._admission",
    "Committed": "ukedge.host.instances._admission",
    "host_capacity": "ukedge.host.instances._admission",
    "check_once": "ukedge.host.instances._health",
    "wait_healthy": "ukedge.host.instances._health",
    "InstanceManager": "ukedge.host.instances._manager",
    "instance_docs": "ukedge.host.instances._records",
    "listed_instances": "ukedge.host.instances._records",
    "record_settled": "ukedge.host.instances._settled",
}

__getattr__ = lazy_exports(globals(), _LAZY)
