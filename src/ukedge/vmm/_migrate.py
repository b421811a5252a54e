"""Live migration for the QEMU backend: pre-copy into a file descriptor, and the receiving
side's wait for the stream to be loaded.

The sender's QEMU writes its migration stream into a socket passed with SCM_RIGHTS (the sandbox
forbids ``exec:`` helpers, and no QEMU port may face the network); whoever holds the other end
carries it to the receiver (the host agent, over its authenticated channel). The receiver's
QEMU was started with ``-incoming unix:…`` and ``-S``, so it stays paused once loaded: its
agent puts what the guest wrote meanwhile in place before it lets it run.

Pre-copy sends RAM while the guest runs, then dirty pages again until what is left fits the
``downtime-limit``; auto-converge throttles a guest that dirties pages faster than they go.

Post-copy (optional, ``postcopy``): both QEMUs get the ``postcopy-ram`` capability (the
receiver's before its stream starts; it implies the return path, on which the receiver asks for
the pages its guest touches), and the sender switches with ``migrate-start-postcopy`` once the
first pass over RAM is done (:func:`should_start_postcopy`). Why then: the first pass carries
every page once while the guest still runs here, so the receiver only has to fault in what was
dirtied since; switching earlier makes it fault in pages that pre-copy would have sent anyway,
and waiting for the dirty bytes to stop shrinking lets a guest that never converges cost passes
without bound. From the switch on the sender's RAM is no longer a complete copy. The receiver
leaves ``inmigrate`` as soon as it has loaded the device state sent at the switch (QEMU's
"postcopy-run" leaves a ``-S`` machine ``paused`` instead of starting it), so
:func:`wait_loaded` returns then, and the ``cont`` that follows runs the guest there while the
rest of its RAM still arrives, each page it touches first asked for on the return path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ukedge.errors import MachineError
from ukedge.vmm import _qmp

__all__ = [
    "BANDWIDTH",
    "accept_postcopy",
    "capabilities",
    "completed",
    "ignore_shared",
    "incoming_status",
    "send",
    "should_start_postcopy",
    "wait_loaded",
]

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


def capabilities(*, auto_converge: bool, postcopy: bool) -> list[dict[str, Any]]:
    """The sender's capabilities, each said explicitly (QEMU keeps them for the process's
    life: a machine whose post-copy move failed must not keep post-copy for its next one)."""
    return [
        {"capability": "auto-converge", "state": auto_converge},
        ignore_shared(False),  # the whole RAM goes, a clone's too
        {"capability": "postcopy-ram", "state": postcopy},
    ]


def should_start_postcopy(info: object) -> bool:
    """Switch a post-copy migration now? Once QEMU is past its first pass over RAM (its dirty
    bitmap was synced a second time) and still pre-copying."""
    if not isinstance(info, dict) or info.get("status") != "active":
        return False
    ram = info.get("ram")
    return isinstance(ram, dict) and int(ram.get("dirty-sync-count", 0)) >= 2


class _Migrating(Protocol):
    @property
    def machine_id(self) -> str: ...
    @property
    def qmp_path(self) -> Path: ...


def send(
    machine: _Migrating,
    fd: int,
    *,
    downtime_limit_ms: int,
    auto_converge: bool,
    postcopy: bool = False,
    on_postcopy: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Migrate ``machine`` into ``fd``; returns QEMU's final ``query-migrate`` answer.

    ``postcopy``: switch to post-copy after the first pass; ``on_postcopy`` is called once QEMU
    reports ``postcopy-active`` and has stopped the guest here (from then on this machine's RAM
    is no longer whole, and the guest writes nothing more here: its results can be handed
    over while the rest of its RAM still goes)."""

    async def body(session: _qmp.Session) -> dict[str, Any]:
        await session.execute(
            "migrate-set-capabilities",
            {"capabilities": capabilities(auto_converge=auto_converge, postcopy=postcopy)},
        )
        await session.execute(
            "migrate-set-parameters",
            {"max-bandwidth": BANDWIDTH, "downtime-limit": downtime_limit_ms},
        )
        session.send_fd(fd)
        await session.execute("getfd", {"fdname": "ukedge-live"})
        await session.execute("migrate", {"uri": "fd:ukedge-live"})
        if postcopy:
            await _switch_to_postcopy(session, on_postcopy)
        return await completed(session, machine.machine_id, "live migration")

    # Each step is bounded, not the whole: a slow link takes as long as it takes.
    return _qmp.run(machine.qmp_path, body, machine_id=machine.machine_id, timeout=60.0)


async def _switch_to_postcopy(
    session: _qmp.Session, on_postcopy: Callable[[], None] | None
) -> None:
    """Start post-copy once :func:`should_start_postcopy` says so, and wait until QEMU is in it;
    returns early when the migration ended first (pre-copy converged, or it failed)."""
    asked = False
    while True:
        info = await session.execute("query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "postcopy-active":
            # QEMU reports postcopy-active before its migration thread has stopped the vCPUs;
            # the caller hands the guest's results over from here on, so wait for the stop
            # (the stop holds the lock QMP needs, so "not running" means stopped for good).
            while await _running(session):
                await asyncio.sleep(0.002)
            if on_postcopy is not None:
                on_postcopy()
            return
        if status not in ("setup", "active", "pre-switchover", "device", None):
            # Completed in pre-copy (also after the switch was asked for: QEMU switches only
            # while more is left than fits the downtime limit), failed or cancelled:
            # completed() says which.
            return
        if not asked and should_start_postcopy(info):
            await session.execute("migrate-start-postcopy")
            asked = True
        await asyncio.sleep(0.005)


async def _running(session: _qmp.Session) -> bool:
    info = await session.execute("query-status")
    return isinstance(info, dict) and info.get("running") is True


async def completed(session: _qmp.Session, machine_id: str, what: str) -> dict[str, Any]:
    """Poll the migration started on ``session`` until QEMU completed it; returns its final
    ``query-migrate`` answer, or raises MachineError naming ``what`` failed and why."""
    while True:
        info = await session.execute("query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            assert isinstance(info, dict)
            return info
        if status in ("failed", "cancelled", "postcopy-paused"):
            # postcopy-paused: the stream broke after the switch; QEMU waits for a recovery
            # (postcopy-recover) that ukedge does not do, so it is the end of this migration.
            desc = info.get("error-desc", status) if isinstance(info, dict) else status
            raise MachineError(f"{what} of machine {machine_id} failed: {desc}", machine_id)
        await asyncio.sleep(0.005)


def accept_postcopy(machine: _Migrating) -> None:
    """Let the receiving machine take a post-copy stream: set before the stream starts (QEMU
    refuses a post-copy advice it did not expect); QEMU checks userfaultfd here."""
    _qmp.execute(
        machine.qmp_path,
        [
            (
                "migrate-set-capabilities",
                {"capabilities": [{"capability": "postcopy-ram", "state": True}]},
            )
        ],
        machine_id=machine.machine_id,
    )


def incoming_status(machine: _Migrating) -> str | None:
    """The receiving machine's incoming migration status (``query-migrate`` reports the
    incoming side's on a machine started with ``-incoming``)."""
    (info,) = _qmp.execute(
        machine.qmp_path, [("query-migrate", None)], machine_id=machine.machine_id
    )
    status = info.get("status") if isinstance(info, dict) else None
    return status if isinstance(status, str) else None


def wait_loaded(machine: _Migrating, timeout: float) -> str:
    """Poll the receiving machine until it left ``inmigrate`` (the whole stream loaded, or in
    post-copy the device state sent at the switch); returns its run state."""
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
