"""The edge-node side: instance lifecycle on one host (and, later, the agent serving it)."""

from ukedge.host._forwarder import ForwardRound, ResultForwarder, ResultSource, manager_sources
from ukedge.host._health import check_once, wait_healthy
from ukedge.host._layers import UnpackedLayers
from ukedge.host._manager import InstanceManager, open_manager
from ukedge.host._models import Instance, InstanceState, PortMapping, RunRequest, parse_port_mapping
from ukedge.host._names import NAME_PATTERN, random_name
from ukedge.host._spool import MAX_LINE_BYTES, ResultSpool, SpoolError

__all__ = [
    "MAX_LINE_BYTES",
    "NAME_PATTERN",
    "ForwardRound",
    "Instance",
    "InstanceManager",
    "InstanceState",
    "PortMapping",
    "ResultForwarder",
    "ResultSource",
    "ResultSpool",
    "RunRequest",
    "SpoolError",
    "UnpackedLayers",
    "check_once",
    "manager_sources",
    "open_manager",
    "parse_port_mapping",
    "random_name",
    "wait_healthy",
]
