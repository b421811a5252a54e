"""Keeps the on-demand proxies of an instance manager: one :class:`OnDemandProxy` per published
TCP port of every on-demand instance, booting its VM on the first connection and stopping it
when idle (see :mod:`ukedge.host.ondemand._proxy` for the TCP side).

It runs on an event loop it is given (the agent's) or on its own loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any

from ukedge.errors import InstanceError, UkedgeError, UsageError
from ukedge.host._models import Instance, InstanceEvent, InstanceState, PortMapping
from ukedge.host.instances import InstanceManager, wait_healthy
from ukedge.host.ondemand._proxy import OnDemandProxy, ProxyState, Upstream
from ukedge.image import HealthCheck

__all__ = ["OnDemandController"]

log = logging.getLogger(__name__)

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
                # when the connection stays open (see ukedge.host.instances._health).
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
