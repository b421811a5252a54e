"""Short synchronous QMP sessions over qemu.qmp.

A QMP socket serves one client at a time, and a machine may be controlled by several processes
over its life (the CLI that started it, the host agent, the agent after a restart). So nothing
holds a session open: each operation connects, runs its commands and disconnects. Connecting
only when an operation needs QMP also keeps QMP off the boot path entirely.

qemu.qmp is asyncio-only; callers of this package are mostly synchronous (the CLI, worker
threads of the agent). Each session runs on its own event loop, in a helper thread when the
calling thread already runs one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient, QMPError

from ukedge.errors import MachineError

log = logging.getLogger(__name__)

T = TypeVar("T")

Command = tuple[str, dict[str, Any] | None]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:  # (outside the except block, so errors do not chain to the RuntimeError)
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Session:
    """One connected QMP session handed to a :func:`run` body."""

    def __init__(self, client: QMPClient, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    async def execute(self, name: str, args: dict[str, Any] | None = None) -> object:
        return await asyncio.wait_for(self._client.execute(name, args), self._timeout)

    def send_fd(self, fd: int) -> None:
        """Pass ``fd`` with SCM_RIGHTS; the next ``getfd`` names it."""
        self._client.send_fd_scm(fd)


async def _session(socket_path: Path, body: Callable[[Session], Awaitable[T]], timeout: float) -> T:
    client = QMPClient("ukedge")
    try:
        try:
            await asyncio.wait_for(client.connect(str(socket_path)), timeout)
        except AssertionError as exc:
            # qemu.qmp asserts (instead of raising) when QEMU hangs up mid-handshake, which a
            # machine that ends just then does: it is the same as a closed connection.
            raise EOFError("QEMU closed the QMP connection during the handshake") from exc
        return await body(Session(client, timeout))
    finally:
        # disconnect() re-raises what ended the session (EOFError when QEMU quit right after
        # answering, e.g. because the guest powered off); the body's outcome is what counts.
        try:
            await client.disconnect()
        except (QMPError, OSError, EOFError) as exc:
            log.debug("QMP disconnect from %s: %r", socket_path, exc)


def execute(
    socket_path: Path,
    commands: Sequence[Command],
    *,
    machine_id: str | None = None,
    timeout: float = 10.0,
) -> list[object]:
    """Run ``commands`` in one QMP session and return their results in order."""

    async def body(session: Session) -> list[object]:
        return [await session.execute(name, args) for name, args in commands]

    return run(socket_path, body, machine_id=machine_id, timeout=timeout)


def run(
    socket_path: Path,
    body: Callable[[Session], Awaitable[T]],
    *,
    machine_id: str | None = None,
    timeout: float = 10.0,
) -> T:
    """Run ``body`` with a connected session; ``timeout`` bounds each step, not the whole.

    Every failure (no socket, refused, QEMU error reply, timeout) is raised as MachineError
    from the cause.
    """
    who = machine_id or str(socket_path.parent)
    try:
        return run_sync(_session(socket_path, body, timeout))
    except ExecuteError as exc:
        raise MachineError(
            f"QEMU refused {exc.sent['execute']!s} for machine {who}: {exc}",
            machine_id,
        ) from exc
    except QMPError as exc:
        raise MachineError(
            f"QMP session with machine {who} failed ({exc}); is it still running?", machine_id
        ) from exc
    except (OSError, TimeoutError, EOFError) as exc:
        raise MachineError(
            f"cannot reach the QMP socket {socket_path} of machine {who}: {exc or type(exc)}",
            machine_id,
        ) from exc
