"""How a published port reads (``127.0.0.1:8080->80/tcp``, Docker's form): one spelling for
:class:`~ukedge.ports.PortMapping` and for what prints a port from a record without the model
(``ukedge ps``)."""

from __future__ import annotations

__all__ = ["port_text"]


def port_text(host_ip: str, host_port: int, guest_port: int, protocol: str) -> str:
    return f"{host_ip}:{host_port}->{guest_port}/{protocol}"
