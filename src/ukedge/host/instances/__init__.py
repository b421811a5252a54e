"""Instances of one node: the manager (the one lifecycle implementation), its records, the
supervisor's health probes and restart policy, admission against the node's capacity, and the
files a run leaves (console, results, prewarm snapshots)."""

from ukedge.host.instances._admission import Capacity, Committed, host_capacity
from ukedge.host.instances._health import check_once, wait_healthy
from ukedge.host.instances._manager import InstanceManager

__all__ = [
    "Capacity",
    "Committed",
    "InstanceManager",
    "check_once",
    "host_capacity",
    "wait_healthy",
]
