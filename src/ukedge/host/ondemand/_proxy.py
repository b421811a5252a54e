"""On-demand instances: the agent listens on a published port itself and scales the VM to zero.

The first connection to an idle port boots the VM (resumed from its prewarm snapshot when there
is one) and is proxied once the guest port answers; the VM is stopped after ``idle_timeout_s``
without open connections, and the next connection boots it again. This is the paper's
"restarting an application when a request comes".

:class:`OnDemandProxy` is the TCP part and knows nothing of VMs: ``activate()`` makes the upstream
exist and says where it is, ``deactivate()`` ends it. Both block (they drive QEMU), so they run in
worker threads while the event loop keeps proxying other connections. Proxying uses asyncio
protocols rather than streams: a chunk read from one socket is written to the other in the same
callback, with no task switch, which keeps a warm request well under a millisecond of added
latency; TCP_NODELAY is set on both sides by asyncio itself.

The instances' side, one proxy per published port of every on-demand instance, is
:class:`~ukedge.host.ondemand.OnDemandController` (``_controller``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import logging
import socket
import time
import typing
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ukedge.errors import InstanceError

__all__ = ["OnDemandProxy", "ProxyState", "Upstream"]

log = logging.getLogger(__name__)

#: Where the proxied service really listens: ``(host, port)``.
Upstream = tuple[str, int]

_T = TypeVar("_T")
_CONNECT_RETRY_S = 0.02


class ProxyState(enum.StrEnum):
    """idle (scaled to zero) → activating → active → deactivating → idle."""

    IDLE = "idle"
    ACTIVATING = "activating"
    ACTIVE = "active"
    DEACTIVATING = "deactivating"


class _Pipe(asyncio.Protocol):
    """One socket of a proxied connection: what it reads is written to its peer's socket.

    Backpressure: when this socket's send buffer fills, asyncio calls ``pause_writing`` and the
    peer stops reading until ``resume_writing``, so a fast sender waits in its own kernel buffer.
    Half-close: an EOF read here becomes a ``write_eof`` (FIN) on the peer, and the pair closes
    once both directions have ended. An error on either socket aborts both.
    """

    def __init__(self, peer: _Pipe | None = None, on_lost: Callable[[], None] | None = None):
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.eof = False
        self.lost = False
        self._on_lost = on_lost
        #: Bytes read before the upstream was linked (some loops, uvloop among them, start
        #: reading right after connection_made whatever it paused).
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always an asyncio.Transport subclass (uvloop's are not).
        transport = typing.cast(asyncio.Transport, transport)
        self.transport = transport
        if self.peer is None:
            # A client waiting for its upstream: leave its bytes in the kernel until there is
            # somewhere to send them.
            transport.pause_reading()
        else:
            # The upstream side: link up and let the client's bytes flow at once (a loop turn
            # earlier than when create_connection() returns).
            client = self.peer
            client.peer = self
            for chunk in client._early:
                transport.write(chunk)
            client._early.clear()
            if client.eof and transport.can_write_eof():
                transport.write_eof()
            if not client.lost and client.transport is not None and not client.eof:
                client.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self._early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None and not self.lost:
            return True  # a client that sent all before its upstream exists: pass it on later
        if peer is None or peer.transport is None or peer.lost:
            return False  # nothing to pass it on to: close
        if peer.eof:
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        return True  # keep writing the other direction

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            if exc is not None:
                peer.transport.abort()
            else:
                peer.transport.close()
        if self._on_lost is not None:
            self._on_lost()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.abort()


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # An agent restarted at once must get its ports back despite old connections in
        # TIME_WAIT; SO_REUSEADDR does not let two live listeners share a port on Linux.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class OnDemandProxy:
    """Listens on ``listen`` and proxies each connection to an upstream that exists only while
    needed.

    ``activate()`` (blocking, run in a thread) must return the upstream address once the service
    there really answers; it runs once however many connections wait for it. ``deactivate()``
    (blocking) ends the upstream; it runs after ``idle_timeout_s`` without open connections.
    When activation fails, the waiting connections are closed and the next connection tries
    again. Connecting to an active upstream is retried for ``connect_timeout_s``; when it still
    fails, the upstream is taken for dead and deactivated, so the next connection activates anew.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        activate: Callable[[], Upstream],
        deactivate: Callable[[], None],
        idle_timeout_s: float,
        *,
        name: str = "",
        connect_timeout_s: float = 5.0,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s}")
        self.listen = listen
        self.name = name or f"{listen[0]}:{listen[1]}"
        self.idle_timeout_s = idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._activate_fn = activate
        self._deactivate_fn = deactivate
        #: Where activate() and deactivate() run; None: the loop's default executor.
        self._executor = executor
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._upstream: Upstream | None = None
        self._activation: asyncio.Task[Upstream] | None = None
        self._deactivation: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._clients: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        #: Completed activations since start (cold starts, and adoptions by :meth:`wake`).
        self.activations = 0
        #: Completed deactivations since start.
        self.deactivations = 0
        #: Seconds the last completed activation took.
        self.last_activation_s: float | None = None
        #: Bumped whenever the upstream appears or goes, so a caller that read the VM's state
        #: in another thread can tell whether the proxy moved on meanwhile.
        self.generation = 0

    # -- life of the listener ------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listening port; raises :class:`InstanceError` when it is taken."""
        if self._server is not None:
            return
        self._loop = asyncio.get_running_loop()
        host, port = self.listen
        try:
            sock = _listen_socket(host, port)
        except OSError as exc:
            why = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise InstanceError(
                f"cannot listen on {host}:{port} for on-demand {self.name}: {why}; "
                "free the port or publish another one"
            ) from exc
        self._server = await self._loop.create_server(self._new_client, sock=sock)
        log.info("on-demand %s listening on %s:%s", self.name, *self.address)

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (the real port when ``listen`` asked for port 0)."""
        if self._server is None:
            return self.listen
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def state(self) -> ProxyState:
        if self._deactivation is not None:
            return ProxyState.DEACTIVATING
        if self._activation is not None:
            return ProxyState.ACTIVATING
        return ProxyState.IDLE if self._upstream is None else ProxyState.ACTIVE

    @property
    def upstream(self) -> Upstream | None:
        """Where connections go now; None while scaled to zero or in transition."""
        return self._upstream

    @property
    def connections(self) -> int:
        """Client connections open now (including those waiting for activation)."""
        return len(self._clients)

    @property
    def buffered_bytes(self) -> int:
        """Bytes read from one side and not yet taken by the other's kernel: backpressure keeps
        this near asyncio's high-water mark per connection however fast a sender is."""
        total = 0
        for client in self._clients:
            for pipe in (client, client.peer):
                if pipe is not None and pipe.transport is not None:
                    total += pipe.transport.get_write_buffer_size()
        return total

    def forget_upstream(self) -> None:
        """The upstream ended without the proxy (a user stopped the VM): the next connection
        activates again instead of trying the old address for ``connect_timeout_s``."""
        if self._activation is None and self._deactivation is None:
            self._disarm_idle()
            self._upstream = None
            self.generation += 1

    async def close(self) -> None:
        """Stop listening and drop every connection; the upstream is left as it is (an agent
        that restarts adopts a running VM instead of booting it again)."""
        self._closed = True
        self._disarm_idle()
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            client.abort()
        for task in list(self._tasks):
            task.cancel()
        # Activations and deactivations run in threads that cannot be interrupted; let them end
        # so nobody drives the VM after close() returned.
        pending = [t for t in (self._activation, self._deactivation) if t is not None]
        for task in [*pending, *self._tasks]:
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- activation ----------------------------------------------------------------------------

    async def wake(self) -> Upstream:
        """Activate now, without a connection (or adopt an upstream that already runs: the
        caller's ``activate`` decides); the idle timer runs from when it is ready."""
        upstream = await self._ensure_active()
        self._arm_idle()
        return upstream

    async def _ensure_active(self) -> Upstream:
        while True:
            if self._closed:
                raise InstanceError(f"on-demand {self.name} is closed")
            if self._deactivation is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._deactivation)
                continue
            if self._upstream is not None:
                return self._upstream
            if self._activation is None:
                self._activation = self._spawn_shared(self._activate())
            return await asyncio.shield(self._activation)

    async def _activate(self) -> Upstream:
        began = time.monotonic()
        try:
            log.info("on-demand %s: activating", self.name)
            assert self._loop is not None
            upstream = await self._loop.run_in_executor(self._executor, self._activate_fn)
        except Exception as exc:
            log.warning("on-demand %s: activation failed: %s", self.name, exc)
            raise
        finally:
            self._activation = None
        self._upstream = upstream
        self.generation += 1
        self.activations += 1
        self.last_activation_s = time.monotonic() - began
        log.info(
            "on-demand %s: active at %s:%s after %.3f s",
            self.name,
            *upstream,
            self.last_activation_s,
        )
        if not self._clients:
            self._arm_idle()
        return upstream

    def _deactivate_now(self, reason: str) -> None:
        if self._deactivation is not None or self._closed:
            return
        self._disarm_idle()
        self._upstream = None
        self.generation += 1
        self._deactivation = self._spawn_shared(self._deactivate(reason))

    async def _deactivate(self, reason: str) -> None:
        log.info("on-demand %s: deactivating (%s)", self.name, reason)
        try:
            assert self._loop is not None
            await self._loop.run_in_executor(self._executor, self._deactivate_fn)
            self.deactivations += 1
        except Exception as exc:
            log.warning("on-demand %s: deactivation failed: %s", self.name, exc)
        finally:
            self._deactivation = None
            self.generation += 1

    def _spawn_shared(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """A task several waiters await (shielded); its failure is theirs to report."""
        assert self._loop is not None
        task = self._loop.create_task(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    # -- idle ----------------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        self._disarm_idle()
        if self._closed or self._clients or self._upstream is None or self._loop is None:
            return
        self._idle = self._loop.call_later(self.idle_timeout_s, self._on_idle)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _on_idle(self) -> None:
        self._idle = None
        if not self._clients and self._upstream is not None and self._activation is None:
            self._deactivate_now(f"idle for {self.idle_timeout_s:g} s")

    # -- connections ---------------------------------------------------------------------------

    def _new_client(self) -> _Pipe:
        client = _Pipe()
        client_ref = client

        def lost() -> None:
            self._clients.discard(client_ref)
            if not self._clients:
                self._arm_idle()

        client._on_lost = lost
        self._clients.add(client)
        self._disarm_idle()
        assert self._loop is not None
        task = self._loop.create_task(self._serve(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return client

    async def _serve(self, client: _Pipe) -> None:
        try:
            upstream = await self._ensure_active()
            await self._connect(client, upstream)
        except asyncio.CancelledError:
            client.abort()
            raise
        except Exception as exc:
            log.info("on-demand %s: dropping a connection: %s", self.name, exc)
            client.abort()

    async def _connect(self, client: _Pipe, upstream: Upstream) -> None:
        assert self._loop is not None
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            if client.lost:
                return
            try:
                transport, _ = await self._loop.create_connection(
                    lambda: _Pipe(peer=client), *upstream
                )
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    if self._upstream == upstream:
                        self._deactivate_now(f"upstream {upstream[0]}:{upstream[1]} refused")
                    raise InstanceError(
                        f"on-demand {self.name}: upstream {upstream[0]}:{upstream[1]} does not "
                        f"accept connections ({exc.strerror or exc})"
                    ) from exc
                await asyncio.sleep(_CONNECT_RETRY_S)
                if self._upstream != upstream:  # forgotten or replaced meanwhile
                    upstream = await self._ensure_active()
                    deadline = time.monotonic() + self.connect_timeout_s
        if client.lost or client.transport is None:
            transport.close()
