"""Network helpers every test directory uses."""

from __future__ import annotations

import functools
import random
import socket
import threading
from pathlib import Path

_given: set[int] = set()
_lock = threading.Lock()
#: Below this, ports are for services (and the hub's, agents' and brokers' defaults).
_LOWEST = 10_000


@functools.cache
def _ephemeral_low() -> int:
    """Where the kernel's range for outgoing connections' local ports begins."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, handed out once per run.

    Chosen below the kernel's ephemeral range when there is room: a port from ``bind(0)``
    comes from that range, which every outgoing connection on the machine draws its local port
    from, so one could take it between this call and the test's server binding it; and two
    calls could return the same port.
    """
    low = _ephemeral_low()
    with _lock:
        if low - _LOWEST >= 1_000:
            for _ in range(200):
                port = random.randrange(_LOWEST, low)
                if port not in _given and _bindable(port):
                    _given.add(port)
                    return port
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
