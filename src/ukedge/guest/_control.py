"""What the host writes on the control port after resuming a clone (``read_control()`` in
``init.c`` is the other side; ``stop`` and ``kill`` are single words and need no helper).

A clone resumed from a snapshot has the snapshot's clock, kernel RNG state, MAC address and
hostname. The message gives it its own, then says ``resumed``, on which init signals the app's
process group with :data:`RESUME_SIGNAL` so a runtime can reseed what it seeded from the kernel
before the snapshot (ukedge's python runtime reseeds ``random``).
"""

from __future__ import annotations

import re

from ukedge.errors import UsageError
from ukedge.guest._launch import MAX_SEED, check_hostname

__all__ = ["resume_message"]

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")


def resume_message(
    *, clock: float, seed: bytes, mac: str | None = None, hostname: str | None = None
) -> bytes:
    """The control lines for one resumed clone: ``time``, ``seed``, ``mac`` and ``hostname``
    (when given), then ``resumed``. ``mac`` is a unicast address in lower-case hex."""
    if not 0 < len(seed) <= MAX_SEED:
        raise UsageError(f"guest RNG seed must be 1 to {MAX_SEED} bytes, got {len(seed)}")
    lines = [f"time {clock:.6f}", f"seed {seed.hex()}"]
    if mac is not None:
        if not _MAC.match(mac) or int(mac[:2], 16) & 1:
            raise UsageError(f"MAC address {mac!r} is not a unicast aa:bb:cc:dd:ee:ff")
        lines.append(f"mac {mac}")
    if hostname is not None:
        check_hostname(hostname)
        lines.append(f"hostname {hostname}")
    lines.append("resumed")
    return "".join(line + "\n" for line in lines).encode()
