"""An instance's ports on the host: the published ones it claims and the loopback forwards the
node keeps for itself (health checks, the on-demand proxy's upstream)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from ukedge.errors import InstanceError
from ukedge.host._models import Instance, PortMapping
from ukedge.host.instances._admission import holds_resources
from ukedge.image import HealthCheck
from ukedge.loopback import free_port

__all__ = [
    "bindable_or_free",
    "check_bindable",
    "check_unclaimed",
    "free_port",
    "upstream",
    "upstream_ports",
]


def check_bindable(ports: Sequence[PortMapping]) -> None:
    """Refuse, before anything is recorded, a published port another program on the node holds
    (or an address the node does not have): QEMU would fail on it only once started."""
    for mapping in ports:
        kind = socket.SOCK_DGRAM if mapping.protocol == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU binds
            try:
                probe.bind((mapping.host_ip, mapping.host_port))
            except OSError as exc:
                why = "it is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise InstanceError(
                    f"cannot publish {mapping}: {mapping.host_ip}:{mapping.host_port} cannot be "
                    f"bound on this node ({why})"
                ) from None


def bindable_or_free(ports: Sequence[PortMapping]) -> list[PortMapping]:
    """``ports`` with each one the node cannot bind moved to a free host port on the same
    address: a controller's move keeps the replica's ports where it can (on another machine
    they are free) and says the new address where it cannot (two agents on one machine)."""
    out = []
    for mapping in ports:
        try:
            check_bindable([mapping])
        except InstanceError:
            kind = socket.SOCK_DGRAM if mapping.protocol == "udp" else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind((mapping.host_ip, 0))
                mapping = mapping.model_copy(update={"host_port": probe.getsockname()[1]})
        out.append(mapping)
    return out


def check_unclaimed(instance: Instance, others: list[Instance]) -> None:
    """Refuse a record that would claim a host port another instance holds."""
    for other in others:
        if not holds_resources(other):
            continue
        for mapping in instance.ports:
            if any(mapping.overlaps(theirs) for theirs in other.ports):
                raise InstanceError(
                    f"host port {mapping.host_ip}:{mapping.host_port} is already published "
                    f"by instance {other.name}; stop it or pick another port"
                )


def upstream_ports(instance: Instance, check: HealthCheck | None) -> list[PortMapping]:
    """Fresh loopback forwards for one run: to each published TCP port of an on-demand instance
    (the proxy's upstream), and to the health check's port unless a published port reaches it."""
    guest_ports: list[int] = []
    if instance.on_demand:
        guest_ports += [p.guest_port for p in instance.ports if p.protocol == "tcp"]
    elif check is not None:
        published = {p.guest_port for p in instance.ports if p.protocol == "tcp"}
        if check.port not in published:
            guest_ports.append(check.port)
    if check is not None and instance.on_demand and check.port not in guest_ports:
        guest_ports.append(check.port)
    return [
        PortMapping(host_ip="127.0.0.1", host_port=free_port(), guest_port=port)
        for port in dict.fromkeys(guest_ports)
    ]


def upstream(instance: Instance, guest_port: int) -> tuple[str, int]:
    """Where the host reaches ``guest_port`` of the running ``instance`` (TCP): a loopback
    forward of the manager's (on-demand proxy, health checks) or a published port."""
    for mapping in instance.upstream_ports:
        if mapping.guest_port == guest_port:
            return mapping.host_ip, mapping.host_port
    if not instance.on_demand:
        for mapping in instance.ports:
            if mapping.guest_port == guest_port and mapping.protocol == "tcp":
                host = "127.0.0.1" if mapping.host_ip == "0.0.0.0" else mapping.host_ip
                return host, mapping.host_port
    raise InstanceError(
        f"instance {instance.name} has no host-side forward to guest port {guest_port}"
        + ("" if instance.state.active else f" (it is {instance.state.value})")
    )
