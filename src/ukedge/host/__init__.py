"""The edge-node side: instance lifecycle on one host (and, later, the agent serving it)."""

from ukedge.host._forwarder import ForwardRound, ResultForwarder, ResultSource, manager_sources
from ukedge.host._health import check_once, wait_healthy
from ukedge.host._images import ImageCache, budget_from_env, open_image_cache
from ukedge.host._images import ImageCache, budget_from_env, open_image_cache
from ukedge.host._layers import UnpackedLayers
from ukedge.host._manager import InstanceManager, open_manager
from ukedge.host._models import (
    HealthStatus,
    ImageSummary,
    Instance,
    InstanceEvent,
    InstanceState,
    InstanceStats,
    NodeInfo,
    PortMapping,
    PruneReport,
    RestartPolicy,
    RunRequest,
    parse_port_mapping,
    parse_restart_policy,
    run_request,
    validation_message,
)
from ukedge.host._names import NAME_PATTERN, random_name
from ukedge.host._ondemand import OnDemandProxy, ProxyState, Upstream
from ukedge.host._service import NodeService, OutputStream
from ukedge.host._spool import MAX_LINE_BYTES, ResultSpool, SpoolError

__all__ = [
    "MAX_LINE_BYTES",
    "NAME_PATTERN",
    "ForwardRound",
    "HealthStatus",
    "ImageCache",
    "ImageCache",
    "ImageSummary",
    "Instance",
    "InstanceEvent",
    "InstanceManager",
    "InstanceState",
    "InstanceStats",
    "NodeInfo",
    "NodeService",
    "OnDemandProxy",
    "OutputStream",
    "PortMapping",
    "ProxyState",
    "PruneReport",
    "RestartPolicy",
    "ResultForwarder",
    "ResultSource",
    "ResultSpool",
    "RunRequest",
    "SpoolError",
    "UnpackedLayers",
    "Upstream",
    "budget_from_env",
    "budget_from_env",
    "check_once",
    "manager_sources",
    "open_image_cache",
    "open_image_cache",
    "open_manager",
    "parse_port_mapping",
    "parse_restart_policy",
    "random_name",
    "run_request",
    "validation_message",
    "wait_healthy",
]
