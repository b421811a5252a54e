"""The node's choice of a loopback port for a server QEMU binds a moment later."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ukedge import loopback


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    ports = [loopback.free_port() for _ in range(50)]
    assert len(set(ports)) == 50, "a port is not handed out twice while it is reserved"
    for port in ports:
        assert 10_000 <= port < _ephemeral_low()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing listens there


def test_a_port_is_handed_out_again_only_after_its_reservation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        wanted = int(s.getsockname()[1])
    # Every draw below the range is that one port: while it is reserved, the fallback (an
    # ephemeral port) answers instead.
    monkeypatch.setattr(loopback.random, "randrange", lambda low, high: wanted)
    monkeypatch.setattr(loopback, "_ephemeral_low", lambda: 65_000)
    assert loopback.free_port(reserve_s=0) == wanted  # reserved for no time at all
    assert loopback.free_port() == wanted
    assert loopback.free_port() != wanted  # reserved for a minute now
    assert loopback.free_port(reserve_s=0) != wanted, "a shorter ask frees no one else's"


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        taken = int(server.getsockname()[1])
        monkeypatch.setattr(loopback.random, "randrange", lambda low, high: taken)
        monkeypatch.setattr(loopback, "_ephemeral_low", lambda: 65_000)
        assert loopback.free_port(reserve_s=0) != taken
