"""Network helpers every test directory uses."""

from __future__ import annotations

import math

from ukedge.loopback import free_port as _free_port


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, handed out once per run
    (the node's own choice, ``ukedge.loopback``, never repeated: a port a finished test's
    server held is not another test's)."""
    return _free_port(reserve_s=math.inf)
