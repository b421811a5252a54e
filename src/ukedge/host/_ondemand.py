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

:class:`OnDemandController` keeps one proxy per published TCP port of every on-demand instance
of an :class:`~ukedge.host.InstanceManager`, on an event loop it is given (the agent's) or on its
own loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import logging
import socket
import threading
import time
import typing
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ukedge.errors import InstanceError, UkedgeError, UsageError
from ukedge.host._health import wait_healthy
from ukedge.host._manager import InstanceManager
from ukedge.host._models import Instance, InstanceEvent, InstanceState, PortMapping
from ukedge.image import HealthCheck

__all__ = ["OnDemandController", "OnDemandProxy", "ProxyState", "Upstream"]

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


# -- the instances' side -------------------------------------------------------------------------

_Key = tuple[str, str, int]  # instance id, listen ip, listen port


class _LoopThread:
    """An event loop of its own, for callers that have none (``ukedge run``, tests, benchmarks)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="ukedge-on-demand", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        async def drain() -> None:
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class OnDemandController:
    """Keeps one :class:`OnDemandProxy` listening on each published TCP port of every on-demand
    instance of ``manager``.

    Call :meth:`sync` (or ``await`` :meth:`async_sync` on the loop) once at start-up and after
    creating an on-demand instance: it opens the listeners of new on-demand instances (raising
    when a port is taken), closes those of removed ones, and adopts a VM that already runs (an
    agent restarted while it ran, a restart by the restart policy, ``ukedge start``) instead of
    booting another; the idle timer then applies to it as to one it booted. The controller also
    listens to the manager's events and syncs by itself after every change of an instance's
    state or a removal, so a VM that ended or restarted behind the proxy's back is noticed.

    Activation starts the instance (the manager resumes it from the image's prewarm snapshot when
    there is one) and waits until the guest port answers the image's health check (or, when that
    checks another port, until a TCP connection to the guest port stays open). Deactivation is an
    ordinary stop, which the manager does not count as a failure for the restart policy.

    With ``loop=None`` the controller runs its own loop in a daemon thread; :meth:`close` ends it.
    """

    def __init__(
        self,
        manager: InstanceManager,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        ready_timeout_s: float = 120.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.manager = manager
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._thread = _LoopThread() if loop is None else None
        self.loop: asyncio.AbstractEventLoop = loop or self._thread.loop  # type: ignore[union-attr]
        self._proxies: dict[_Key, OnDemandProxy] = {}
        self._checks: dict[tuple[str, int], HealthCheck] = {}
        # Boots block a thread each for seconds; a pool of their own keeps a burst of cold
        # starts from queueing behind the loop's small default executor (cpu count + 4).
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=64, thread_name_prefix="ukedge-on-demand"
        )
        self._async_lock: asyncio.Lock | None = None
        self._closed = False
        self._kicked = False
        self._tasks: set[asyncio.Task[object]] = set()
        self.manager.listeners.append(self._on_event)

    # -- what callers see ----------------------------------------------------------------------

    def proxies(self, instance_id: str | None = None) -> list[OnDemandProxy]:
        """The listeners now open (of one instance, or all)."""
        return [p for k, p in list(self._proxies.items()) if instance_id in (None, k[0])]

    def sync(self, timeout: float | None = 300.0) -> None:
        """:meth:`async_sync` from any thread but the controller's loop; waits for it."""
        if self._on_loop():
            raise UsageError(
                "OnDemandController.sync() was called on the controller's own event loop, where "
                "it would wait for itself; await async_sync() there instead"
            )
        asyncio.run_coroutine_threadsafe(self.async_sync(), self.loop).result(timeout)

    async def async_sync(self) -> None:
        """Match the listeners to the manager's on-demand instances (see the class docstring).

        Raises :class:`InstanceError` naming every port that could not be bound (after opening
        all the others); the next sync tries those again.
        """
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            if self._closed:
                raise InstanceError("the on-demand controller is closed")
            generations = {k: p.generation for k, p in self._proxies.items()}
            instances = await self.loop.run_in_executor(
                self._executor, lambda: self.manager.list(all_instances=True)
            )
            wanted: dict[_Key, tuple[Instance, PortMapping]] = {
                (i.id, p.host_ip, p.host_port): (i, p)
                for i in instances
                if i.on_demand
                for p in i.ports
                if p.protocol == "tcp"
            }
            for key in [k for k in self._proxies if k not in wanted]:
                await self._proxies.pop(key).close()
                self._checks.pop((key[0], key[2]), None)
            errors: list[str] = []
            for key, (instance, mapping) in wanted.items():
                proxy = self._proxies.get(key)
                if proxy is None:
                    proxy = self._proxy(instance, mapping)
                    try:
                        await proxy.start()
                    except InstanceError as exc:
                        errors.append(str(exc))
                        continue
                    self._proxies[key] = proxy
                if generations.get(key, proxy.generation) != proxy.generation:
                    continue  # the proxy moved on while the manager was read
                self._follow(proxy, instance, mapping)
            if errors:
                raise InstanceError("; ".join(errors))

    def _follow(self, proxy: OnDemandProxy, instance: Instance, mapping: PortMapping) -> None:
        """Bring the proxy in line with a VM that started or ended without it."""
        if proxy.state is ProxyState.IDLE and instance.state is InstanceState.RUNNING:
            self._spawn(proxy.wake(), f"adopting {instance.name}")
        elif proxy.state is ProxyState.ACTIVE:
            if not instance.state.active:
                proxy.forget_upstream()
            elif instance.state is InstanceState.RUNNING:
                with contextlib.suppress(InstanceError):
                    if self.manager.upstream(instance, mapping.guest_port) != proxy.upstream:
                        proxy.forget_upstream()  # restarted: new loopback forwards
                        self._spawn(proxy.wake(), f"adopting {instance.name} again")

    def _on_event(self, event: InstanceEvent) -> None:
        """A manager event (any thread): sync soon, once for a burst of events."""
        if self._closed or self.loop.is_closed():
            return
        if event.action in ("create", "remove") or event.previous is not event.state:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        if self._kicked or self._closed:
            return
        self._kicked = True

        async def later() -> None:
            self._kicked = False
            if not self._closed:
                await self.async_sync()

        self._spawn(later(), "syncing after an instance event")

    def close(self) -> None:
        """Close every listener (the VMs keep running; see :meth:`OnDemandProxy.close`) and the
        controller's own loop when it has one. With a loop given to it, call this from another
        thread while that loop still runs, or ``await`` :meth:`aclose` on the loop."""
        if self._on_loop():
            raise UsageError("OnDemandController.close() on its own loop; await aclose() there")
        if not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.aclose(), self.loop).result()
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    async def aclose(self) -> None:
        """:meth:`close` on the controller's loop (the agent's lifespan shutdown)."""
        self._closed = True
        with contextlib.suppress(ValueError):
            self.manager.listeners.remove(self._on_event)
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:  # after a sync in progress, which may open listeners
            proxies, self._proxies = list(self._proxies.values()), {}
            for proxy in proxies:
                await proxy.close()
        for task in list(self._tasks):  # adoptions of closed proxies end with them
            with contextlib.suppress(BaseException):
                await task
        self._executor.shutdown(wait=False)  # close() waited for the proxies' threads

    # -- the proxies' callbacks (worker threads) -----------------------------------------------

    def _proxy(self, instance: Instance, mapping: PortMapping) -> OnDemandProxy:
        key = (instance.id, mapping.host_ip, mapping.host_port)
        return OnDemandProxy(
            (mapping.host_ip, mapping.host_port),
            lambda: self._activate(instance.id, mapping.guest_port),
            lambda: self._deactivate(key),
            instance.idle_timeout_s or 30.0,
            name=f"{instance.name} {mapping}",
            executor=self._executor,
        )

    def _activate(self, instance_id: str, guest_port: int) -> Upstream:
        instance = self.manager.get(instance_id)
        if instance.state is not InstanceState.RUNNING:
            # Also when starting or stopping: start() waits for the instance's lock, so it
            # follows a boot or a stop in progress here (and then boots, or says "running").
            try:
                instance = self.manager.start(instance_id)
            except InstanceError:
                # Another published port of the same instance started it meanwhile.
                instance = self.manager.get(instance_id)
                if instance.state is not InstanceState.RUNNING:
                    raise
        upstream = self.manager.upstream(instance, guest_port)
        try:
            wait_healthy(
                self._check(instance, guest_port),
                *upstream,
                timeout=self.ready_timeout_s,
                alive=lambda: self.manager.get(instance_id).state.active,
            )
        except UkedgeError:
            with contextlib.suppress(UkedgeError):
                self.manager.stop(instance_id, timeout=self.stop_timeout_s)
            raise
        return upstream

    def _check(self, instance: Instance, guest_port: int) -> HealthCheck:
        check = self._checks.get((instance.id, guest_port))
        if check is None:
            _, manifest = self.manager.store.manifest(instance.image_digest)
            own = self.manager.store.config(manifest).healthcheck
            if own is not None and own.port == guest_port:
                check = own
            else:
                # QEMU accepts for the guest before the guest listens: a TCP check passes only
                # when the connection stays open (see ukedge.host._health).
                check = HealthCheck(type="tcp", port=guest_port, timeout_s=1.0)
            self._checks[(instance.id, guest_port)] = check
        return check

    def _deactivate(self, key: _Key) -> None:
        others = [p for k, p in list(self._proxies.items()) if k[0] == key[0] and k != key]
        # A peer that is deactivating too does not hold the machine: both then stop it (stop
        # is idempotent), where waiting for each other would leave it running for good.
        busy = (ProxyState.ACTIVATING, ProxyState.ACTIVE)
        if any(p.connections or p.state in busy for p in others):
            return  # another published port of the same instance is still in use
        self.manager.stop(key[0], timeout=self.stop_timeout_s)

    # -- helpers -------------------------------------------------------------------------------

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _spawn(self, coro: Coroutine[Any, Any, object], what: str) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[object]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("on-demand: %s failed: %s", what, t.exception())

        task.add_done_callback(done)
