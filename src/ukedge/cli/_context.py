"""Which node the commands act on: this machine (daemonless) or a host agent; and which
controller the fleet commands talk to.

``--host URL`` or ``UKEDGE_HOST`` (the Docker-context idiom) sends instance and image commands
to an agent; without either they run in-process. Commands get a
:class:`~ukedge.host.NodeService` either way and render what it returns, so the output is the
same wherever the node is. ``--controller URL`` (else ``UKEDGE_CONTROLLER``, else the local
controller) is where ``node``, ``deploy``, ``results``… go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ukedge.controller import ControllerClient, FleetService
    from ukedge.host import NodeService

__all__ = [
    "close_controller",
    "controller",
    "local_only",
    "node",
    "remote_host",
    "set_controller",
    "set_target",
]

_target: dict[str, str | None] = {"host": None, "token": None, "controller": None}
_node: list[NodeService] = []
_controller: list[ControllerClient] = []


def set_target(host: str | None, token: str | None) -> None:
    _target["host"] = host or None
    _target["token"] = token or None
    _node.clear()


def set_controller(url: str | None) -> None:
    close_controller()
    _target["controller"] = url or None


def close_controller() -> None:
    """Close the controller client's connections (at the end of each invocation)."""
    while _controller:
        _controller.pop().close()


def controller() -> FleetService:
    """The controller of this invocation (settings resolved once, on first use)."""
    if not _controller:
        from ukedge.controller import ControllerClient, ControllerConfig

        _controller.append(ControllerClient(ControllerConfig.resolve(_target["controller"])))
    return _controller[0]


def remote_host() -> str | None:
    """The agent address commands go to, or ``None`` for this machine."""
    return _target["host"]


def node() -> NodeService:
    """The node of this invocation (made once; agents and stores open lazily)."""
    if not _node:
        from ukedge import host

        address = _target["host"]
        if address:
            _node.append(host.AgentClient(address, token=_target["token"]))
        else:
            _node.append(host.open_local_node())
    return _node[0]


def local_only(command: str) -> None:
    """Refuse ``--host`` for a command that works on this machine's files."""
    if _target["host"]:
        from ukedge.errors import UsageError

        raise UsageError(
            f"`ukedge {command}` works on this machine and does not take --host "
            "(unset UKEDGE_HOST); push images to a hub and pull or run them on the agent"
        )
