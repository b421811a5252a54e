"""A published port: a host socket forwarded to a port in the guest, as ``docker run -p`` says.

One model serves every layer that handles one: the vmm backends forward it, the instance
manager and the agent's API carry it, the controller's deployments and its wire protocol store
it, and the CLI parses it from ``-p``. It sits below all of them (the lowest layer that needs
it is ``vmm``, which may not import ``host``). Its JSON form, ``{"host_ip", "host_port",
"guest_port", "protocol"}``, is the agent's API, the controller's wire protocol and a machine's
state file at once.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ukedge._portfmt import port_text
from ukedge.errors import UsageError
from ukedge.validation import validation_message

__all__ = ["PortMapping", "parse_port_mapping"]


class PortMapping(BaseModel):
    """``host_ip:host_port`` forwarded to ``guest_port``; bound to loopback unless asked
    otherwise. Built on first use (``defer_build``), like the models of the node's API."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    host_ip: str = "127.0.0.1"
    host_port: int = Field(ge=1, le=65535, strict=True)
    guest_port: int = Field(ge=1, le=65535, strict=True)
    protocol: str = Field(default="tcp", pattern="^(tcp|udp)$")

    @field_validator("host_ip")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        # Checked here, before an instance record exists: QEMU's user-mode network forwards
        # IPv4 host addresses only.
        try:
            return str(IPv4Address(value))
        except ValueError:
            raise ValueError(
                f"host address {value!r} is not an IPv4 address (IPv6 and host names cannot "
                "be published; use 127.0.0.1, 0.0.0.0 or one of the node's IPv4 addresses)"
            ) from None

    def __str__(self) -> str:
        return port_text(self.host_ip, self.host_port, self.guest_port, self.protocol)

    def overlaps(self, other: PortMapping) -> bool:
        """Whether both want the same host socket (0.0.0.0 takes the port on every address)."""
        return (
            self.host_port == other.host_port
            and self.protocol == other.protocol
            and (self.host_ip == other.host_ip or "0.0.0.0" in (self.host_ip, other.host_ip))
        )


_PUBLISH = re.compile(
    r"^(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?P<host>\d+):(?P<guest>\d+)(?:/(?P<proto>tcp|udp))?$"
)


def parse_port_mapping(text: str) -> PortMapping:
    """``[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]``, as ``docker run -p`` spells it."""
    m = _PUBLISH.match(text)
    if not m:
        raise UsageError(
            f"invalid port mapping {text!r}: expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp], "
            "e.g. 18080:8080"
        )
    host, guest = int(m["host"]), int(m["guest"])
    for label, port in (("host", host), ("guest", guest)):
        if not 1 <= port <= 65535:
            raise UsageError(
                f"invalid port mapping {text!r}: {label} port {port} is not in 1-65535"
            )
    try:
        return PortMapping(
            host_ip=(m["ip"] or "127.0.0.1").strip("[]"),
            host_port=host,
            guest_port=guest,
            protocol=m["proto"] or "tcp",
        )
    except ValidationError as exc:
        raise UsageError(f"invalid port mapping {text!r}: {validation_message(exc)}") from None
