"""The edge-node side: instance lifecycle on one host, and the host agent serving it over REST.

The server half (the agent, its FastAPI app, uvicorn), the agent client (httpx), the on-demand
proxy (asyncio) and the results side (spool, forwarder, MQTT sink) load on first use, so the
CLI's local commands do not pay for importing what they never run.
"""

import typing

from ukedge._lazy import lazy_exports
from ukedge.host._events import EventBus, Subscription
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
)
from ukedge.host._names import NAME_PATTERN, random_name
from ukedge.host._node import LocalNode
from ukedge.host._service import NodeService, OutputStream
from ukedge.host._wiring import (
    NodeLayout,
    default_qemu_user,
    open_image_cache,
    open_local_node,
    open_manager,
    open_node,
    resolve_qemu_user,
)
from ukedge.host.images import ImageCache, UnpackedLayers, budget_from_env
from ukedge.host.instances import (
    Capacity,
    Committed,
    InstanceManager,
    check_once,
    host_capacity,
    wait_healthy,
)

__all__ = [
    "DEFAULT_ADDR",
    "HOST_ENV",
    "MAX_LINE_BYTES",
    "NAME_PATTERN",
    "TOKEN_ENV",
    "Agent",
    "AgentClient",
    "AgentSettings",
    "Capacity",
    "Committed",
    "EventBus",
    "ForwardRound",
    "HealthStatus",
    "ImageCache",
    "ImageSummary",
    "Instance",
    "InstanceEvent",
    "InstanceManager",
    "InstanceState",
    "InstanceStats",
    "LocalNode",
    "NodeInfo",
    "NodeLayout",
    "NodeService",
    "OnDemandController",
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
    "Subscription",
    "UnpackedLayers",
    "Upstream",
    "budget_from_env",
    "check_once",
    "create_agent_app",
    "default_qemu_user",
    "ensure_token",
    "host_capacity",
    "load_agent_settings",
    "manager_sources",
    "move_instance",
    "open_image_cache",
    "open_local_node",
    "open_manager",
    "open_node",
    "parse_port_mapping",
    "parse_restart_policy",
    "random_name",
    "resolve_qemu_user",
    "run_request",
    "serve",
    "wait_healthy",
]

if typing.TYPE_CHECKING:
    from ukedge.host.agent._agent import DEFAULT_ADDR, Agent, AgentSettings, load_agent_settings
    from ukedge.host.agent._api import create_agent_app
    from ukedge.host.agent._client import HOST_ENV, TOKEN_ENV, AgentClient
    from ukedge.host.agent._move import move_instance
    from ukedge.host.agent._serve import ensure_token, serve
    from ukedge.host.ondemand import OnDemandController, OnDemandProxy, ProxyState, Upstream
    from ukedge.host.results._forwarder import (
        ForwardRound,
        ResultForwarder,
        ResultSource,
        manager_sources,
    )
    from ukedge.host.results._spool import MAX_LINE_BYTES, ResultSpool, SpoolError

_LAZY = {
    "DEFAULT_ADDR": "ukedge.host.agent._agent",
    "Agent": "ukedge.host.agent._agent",
    "AgentSettings": "ukedge.host.agent._agent",
    "load_agent_settings": "ukedge.host.agent._agent",
    "create_agent_app": "ukedge.host.agent._api",
    "HOST_ENV": "ukedge.host.agent._client",
    "TOKEN_ENV": "ukedge.host.agent._client",
    "AgentClient": "ukedge.host.agent._client",
    "move_instance": "ukedge.host.agent._move",
    "ForwardRound": "ukedge.host.results._forwarder",
    "ResultForwarder": "ukedge.host.results._forwarder",
    "ResultSource": "ukedge.host.results._forwarder",
    "manager_sources": "ukedge.host.results._forwarder",
    "MAX_LINE_BYTES": "ukedge.host.results._spool",
    "ResultSpool": "ukedge.host.results._spool",
    "SpoolError": "ukedge.host.results._spool",
    "ensure_token": "ukedge.host.agent._serve",
    "OnDemandController": "ukedge.host.ondemand",
    "OnDemandProxy": "ukedge.host.ondemand",
    "ProxyState": "ukedge.host.ondemand",
    "Upstream": "ukedge.host.ondemand",
    "serve": "ukedge.host.agent._serve",
}


__getattr__ = lazy_exports(globals(), _LAZY)
