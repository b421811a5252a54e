"""The edge-node side: instance lifecycle on one host, and the host agent serving it over REST.

The server half (the agent, its FastAPI app, uvicorn), the agent client (httpx), the on-demand
proxy (asyncio) and the results side (spool, forwarder, MQTT sink) load on first use, so the
CLI's local commands do not pay for importing what they never run. Every other name loads on
first use as well: ``ukedge ps`` reads the instance records (``instance_docs``), asks whether
each is current (``record_settled``) and lists them (``listed_instances``) without pydantic, the
image store or the VM backend.
"""

import typing

from ukedge._lazy import lazy_exports

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
    "instance_docs",
    "listed_instances",
    "load_agent_settings",
    "manager_sources",
    "move_instance",
    "open_image_cache",
    "open_local_node",
    "open_manager",
    "open_node",
    "parse_port_mapping",
    "parse_restart_policy",
    "qemu_from_env",
    "random_name",
    "record_settled",
    "resolve_qemu_user",
    "run_request",
    "serve",
    "wait_healthy",
]

if typing.TYPE_CHECKING:
    from ukedge.host._events import EventBus, Subscription
    from ukedge.host._models import (
        ImageSummary,
        Instance,
        InstanceEvent,
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
    from ukedge.host._states import HealthStatus, InstanceState
    from ukedge.host._wiring import (
        NodeLayout,
        default_qemu_user,
        open_image_cache,
        open_local_node,
        open_manager,
        open_node,
        qemu_from_env,
        resolve_qemu_user,
    )
    from ukedge.host.agent._agent import DEFAULT_ADDR, Agent, AgentSettings, load_agent_settings
    from ukedge.host.agent._api import create_agent_app
    from ukedge.host.agent._client import HOST_ENV, TOKEN_ENV, AgentClient
    from ukedge.host.agent._move import move_instance
    from ukedge.host.agent._serve import ensure_token, serve
    from ukedge.host.images import ImageCache, UnpackedLayers, budget_from_env
    from ukedge.host.instances import (
        Capacity,
        Committed,
        InstanceManager,
        check_once,
        host_capacity,
        instance_docs,
        listed_instances,
        record_settled,
        wait_healthy,
    )
    from ukedge.host.ondemand import OnDemandController, OnDemandProxy, ProxyState, Upstream
    from ukedge.host.results._forwarder import (
        ForwardRound,
        ResultForwarder,
        ResultSource,
        manager_sources,
    )
    from ukedge.host.results._spool import MAX_LINE_BYTES, ResultSpool, SpoolError

_LAZY = {
    "EventBus": "ukedge.host._events",
    "Subscription": "ukedge.host._events",
    "ImageSummary": "ukedge.host._models",
    "Instance": "ukedge.host._models",
    "InstanceEvent": "ukedge.host._models",
    "InstanceStats": "ukedge.host._models",
    "NodeInfo": "ukedge.host._models",
    "PortMapping": "ukedge.host._models",
    "PruneReport": "ukedge.host._models",
    "RestartPolicy": "ukedge.host._models",
    "RunRequest": "ukedge.host._models",
    "parse_port_mapping": "ukedge.host._models",
    "parse_restart_policy": "ukedge.host._models",
    "run_request": "ukedge.host._models",
    "NAME_PATTERN": "ukedge.host._names",
    "random_name": "ukedge.host._names",
    "LocalNode": "ukedge.host._node",
    "NodeService": "ukedge.host._service",
    "OutputStream": "ukedge.host._service",
    "NodeLayout": "ukedge.host._wiring",
    "default_qemu_user": "ukedge.host._wiring",
    "open_image_cache": "ukedge.host._wiring",
    "open_local_node": "ukedge.host._wiring",
    "open_manager": "ukedge.host._wiring",
    "open_node": "ukedge.host._wiring",
    "qemu_from_env": "ukedge.host._wiring",
    "resolve_qemu_user": "ukedge.host._wiring",
    "ImageCache": "ukedge.host.images",
    "UnpackedLayers": "ukedge.host.images",
    "budget_from_env": "ukedge.host.images",
    "Capacity": "ukedge.host.instances",
    "Committed": "ukedge.host.instances",
    "InstanceManager": "ukedge.host.instances",
    "check_once": "ukedge.host.instances",
    "host_capacity": "ukedge.host.instances",
    "wait_healthy": "ukedge.host.instances",
    "instance_docs": "ukedge.host.instances",
    "listed_instances": "ukedge.host.instances",
    "record_settled": "ukedge.host.instances",
    "HealthStatus": "ukedge.host._states",
    "InstanceState": "ukedge.host._states",
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
