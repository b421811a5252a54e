"""The host agent: the node served over REST (one FastAPI router per resource), its settings,
the server runner with its bearer-token auth, the API's metrics, and the client of that API.

Loaded on first use (FastAPI, uvicorn, httpx): the CLI's local commands never need them.
"""

import typing

from ukedge._lazy import lazy_exports

__all__ = [
    "DEFAULT_ADDR",
    "HOST_ENV",
    "TOKEN_ENV",
    "Agent",
    "AgentClient",
    "AgentSettings",
    "build_app",
    "create_agent_app",
    "ensure_token",
    "load_agent_settings",
    "move_instance",
    "open_listeners",
    "serve",
]

if typing.TYPE_CHECKING:
    from ukedge.host.agent._agent import DEFAULT_ADDR, Agent, AgentSettings, load_agent_settings
    from ukedge.host.agent._api import create_agent_app
    from ukedge.host.agent._client import HOST_ENV, TOKEN_ENV, AgentClient
    from ukedge.host.agent._move import move_instance
    from ukedge.host.agent._serve import build_app, ensure_token, open_listeners, serve

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
    "build_app": "ukedge.host.agent._serve",
    "ensure_token": "ukedge.host.agent._serve",
    "open_listeners": "ukedge.host.agent._serve",
    "serve": "ukedge.host.agent._serve",
}

__getattr__ = lazy_exports(globals(), _LAZY)
