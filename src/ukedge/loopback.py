"""A free TCP port on 127.0.0.1 for a server another process is about to bind.

The node forwards loopback ports of its own into guests (health checks, the on-demand proxy's
upstreams, a prewarm's readiness check); QEMU binds each one a moment after the port is chosen.
A port from ``bind(0)`` comes from the kernel's ephemeral range, from which every outgoing
connection on the machine draws its local port: one of them could take it in that moment, and
QEMU's start would fail. So ports are chosen below that range when there is room, and a port
handed out is not handed out again while its taker may not have bound it yet.
"""

from __future__ import annotations

import functools
import random
import socket
import threading
import time
from pathlib import Path

__all__ = ["free_port"]

#: Below this, ports are for services (the hub's, agents' and brokers' defaults among them).
_LOWEST = 10_000
#: Port -> until when it stays reserved for whom it was handed out to.
_given: dict[int, float] = {}
_lock = threading.Lock()


@functools.cache
def _ephemeral_low() -> int:
    """Where the kernel's range for outgoing connections' local ports begins."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, reserve_s: float = 60.0) -> int:
    """A port nothing listens on now, not handed out by this process in the last
    ``reserve_s`` seconds (``math.inf``: never, as the tests ask, so that a port a finished
    test's server held is not another test's)."""
    now = time.monotonic()
    low = _ephemeral_low()
    with _lock:
        for port, until in list(_given.items()):
            if until <= now:
                del _given[port]
        if low - _LOWEST >= 1_000:
            for _ in range(200):
                port = random.randrange(_LOWEST, low)
                if port not in _given and _bindable(port):
                    _given[port] = now + reserve_s
                    return port
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in _given:
                _given[port] = now + reserve_s
                return port
