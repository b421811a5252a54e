"""Live migration for the QEMU backend: pre-copy into a file descriptor, and the receiving
side's wait for the stream to be loaded.

The sender's QEMU writes its migration stream into a socket passed with SCM_RIGHTS (the sandbox
forbids ``exec:`` helpers, and no QEMU port may face the network); whoever holds the other end
carries it to the receiver (the host agent, over its authenticated channel). The receiver's
QEMU was started with ``-incoming unix:…`` and ``-S``, so it stays paused once loaded: its
agent puts what the guest wrote meanwhile in place before it lets it run.

Pre-copy sends RAM while the guest runs, then dirty pages again until what is left fits the
``downtime-limit``; auto-converge throttles a guest that dirties pages faster than they go.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Protocol

from ukedge.errors import MachineError
from ukedge.vmm import _qmp

__all__ = ["BANDWIDTH", "completed", "ignore_shared", "send", "wait_loaded"]

#: No rate limit of QEMU's own (QEMU 7.2 defaults to 128 MiB/s): a live move's link is the
#: agent's channel, a snapshot's a local file.
BANDWIDTH = 1 << 40


def ignore_shared(state: bool) -> dict[str, Any]:
    """The migration capability that leaves shared RAM (a template's file) out of the stream.

    Said explicitly on every outgoing stream: a clone loaded its template with it on, QEMU keeps
    capabilities for the process's life, and a stream sent with it on only loads where it is on
    too (a clone moving to another node, whose receiving machine has no template, would fail
    with "load of migration failed: Invalid argument").
    """
    return {"capability": "x-ignore-shared", "state": state}


class _Migrating(Protocol):
    @property
    def machine_id(self) -> str: ...
    @property
    def qmp_path(self) -> Path: ...


def send(
    machine: _Migrating, fd: int, *, downtime_limit_ms: int, auto_converge: bool
) -> dict[str, Any]:
    """Migrate ``machine`` into ``fd``; returns QEMU's final ``query-migrate`` answer."""

    async def body(session: _qmp.Session) -> dict[str, Any]:
        await session.execute(
            "migrate-set-capabilities",
            {
                "capabilities": [
                    {"capability": "auto-converge", "state": auto_converge},
                    ignore_shared(False),  # the whole RAM goes, a clone's too
                ]
            },
        )
        await session.execute(
            "migrate-set-parameters",
            {"max-bandwidth": BANDWIDTH, "downtime-limit": downtime_limit_ms},
        )
        session.send_fd(fd)
        await session.execute("getfd", {"fdname": "ukedge-live"})
        await session.execute("migrate", {"uri": "fd:ukedge-live"})
        return await completed(session, machine.machine_id, "live migration")

    # Each step is bounded, not the whole: a slow link takes as long as it takes.
    return _qmp.run(machine.qmp_path, body, machine_id=machine.machine_id, timeout=60.0)


async def completed(session: _qmp.Session, machine_id: str, what: str) -> dict[str, Any]:
    """Poll the migration started on ``session`` until QEMU completed it; returns its final
    ``query-migrate`` answer, or raises MachineError naming ``what`` failed and why."""
    while True:
        info = await session.execute("query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            assert isinstance(info, dict)
            return info
        if status in ("failed", "cancelled"):
            desc = info.get("error-desc", status) if isinstance(info, dict) else status
            raise MachineError(f"{what} of machine {machine_id} failed: {desc}", machine_id)
        await asyncio.sleep(0.005)


def wait_loaded(machine: _Migrating, timeout: float) -> str:
    """Poll the receiving machine until it left ``inmigrate``; returns its run state."""
    deadline = time.monotonic() + timeout

    async def body(session: _qmp.Session) -> str:
        while True:
            info = await session.execute("query-status")
            status = str(info.get("status")) if isinstance(info, dict) else "unknown"
            if status != "inmigrate" or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.005)

    status = _qmp.run(machine.qmp_path, body, machine_id=machine.machine_id)
    if status != "paused":
        raise MachineError(
            f"machine {machine.machine_id} did not load the migration stream (QEMU status "
            f"{status!r}); see its qemu.log",
            machine.machine_id,
        )
    return status
