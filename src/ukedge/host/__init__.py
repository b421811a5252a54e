"""The edge-node side: instance lifecycle on one host (and, later, the agent serving it)."""

from ukedge.host._health import check_once, wait_healthy
from ukedge.host._layers import UnpackedLayers
from ukedge.host._manager import InstanceManager, open_manager
from ukedge.host._models import Instance, InstanceState, PortMapping, RunRequest, parse_port_mapping
from ukedge.host._names import NAME_PATTERN, random_name

__all__ = [
    "NAME_PATTERN",
    "Instance",
    "InstanceManager",
    "InstanceState",
    "PortMapping",
    "RunRequest",
    "UnpackedLayers",
    "check_once",
    "open_manager",
    "parse_port_mapping",
    "random_name",
    "wait_healthy",
]
