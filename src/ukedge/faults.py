"""Crash points: places where state changes, at which a test can kill the process.

Crash-safety is claimed for every step that changes durable state (a blob's commit, a manifest
put, an instance's start). A claim like that is only worth something if a test kills the process
exactly there and checks what a restart finds. ``crash_point("hub.blob.after_rename")`` does
nothing unless the process was started with ``UKEDGE_CRASH_POINT`` naming that point; then it
kills its own process with SIGKILL, as ``kill -9`` or a power cut would (no ``finally`` blocks,
no atexit handlers, no flushing of Python buffers).

Off by default and cheap: one dictionary lookup per call. Names are dotted
``<component>.<operation>.<step>`` so a test can list the points of one operation.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_POINT_ENV", "crash_point"]

#: Environment variable naming the one crash point that kills the process (test use only).
CRASH_POINT_ENV = "UKEDGE_CRASH_POINT"


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``UKEDGE_CRASH_POINT`` names ``name``."""
    if os.environ.get(CRASH_POINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
