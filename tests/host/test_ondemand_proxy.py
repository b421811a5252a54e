"""OnDemandProxy with real sockets: a threaded TCP server stands for the VM that activation boots.

The upstream echoes what it reads and, after the client's EOF, sends ``<eof>`` and closes, so a
test can tell that a half-close went through the proxy in both directions.
"""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kit.net import free_port
from ukedge.errors import InstanceError
from ukedge.host import OnDemandProxy, ProxyState


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on asyncio's loop and on uvloop's (the one the agent runs under uvicorn):
    uvloop starts reading a new connection whatever connection_made paused."""
    if request.param == "uvloop":
        import uvloop

        monkeypatch.setattr(asyncio, "run", uvloop.run)
    return str(request.param)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        while data := conn.recv(1 << 16):
            conn.sendall(data)
        conn.sendall(b"<eof>")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class FakeVM:
    """Activation boots (after ``boot_s``) a real TCP server; deactivation shuts it down."""

    def __init__(self, boot_s: float = 0.2, failures: int = 0) -> None:
        self.boot_s = boot_s
        self.failures = failures
        self.activations = 0
        self.deactivations = 0
        self.server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def activate(self) -> tuple[str, int]:
        with self._lock:
            self.activations += 1
            fail = self.failures > 0
            self.failures -= 1
        time.sleep(self.boot_s)
        if fail:
            raise InstanceError("the machine ended before its health check passed")
        if self.server is None:
            self.server = _Server(("127.0.0.1", 0), _Echo)
            self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self._thread.start()
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def deactivate(self) -> None:
        with self._lock:
            self.deactivations += 1
        self.crash()

    def crash(self) -> None:
        """End the server without the proxy knowing (the VM died)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self._thread is not None
            self._thread.join()
            self.server = None


def _run(
    vm: FakeVM,
    body: Callable[[OnDemandProxy], Awaitable[None]],
    idle_timeout_s: float = 5.0,
    **kwargs: float,
) -> None:
    async def main() -> None:
        proxy = OnDemandProxy(
            ("127.0.0.1", 0), vm.activate, vm.deactivate, idle_timeout_s, name="test", **kwargs
        )
        await proxy.start()
        try:
            await body(proxy)
        finally:
            await proxy.close()
            vm.crash()

    asyncio.run(main())


async def _exchange(proxy: OnDemandProxy, payload: bytes) -> bytes:
    """Send ``payload`` then EOF; return all the proxy sends back until it closes."""
    reader, writer = await asyncio.open_connection(*proxy.address)
    try:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()


async def _dropped(proxy: OnDemandProxy) -> bool:
    """Whether the proxy ends a connection without sending anything (EOF or reset)."""
    try:
        return await _exchange(proxy, b"x") == b""
    except ConnectionResetError:
        return True


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_concurrent_first_connections_share_one_activation() -> None:
    vm = FakeVM(boot_s=0.3)

    async def body(proxy: OnDemandProxy) -> None:
        assert proxy.state is ProxyState.IDLE
        payloads = [f"hello {i}".encode() * (i + 1) for i in range(10)]
        answers = await asyncio.gather(*(_exchange(proxy, p) for p in payloads))
        assert answers == [p + b"<eof>" for p in payloads]
        assert vm.activations == 1
        assert proxy.activations == 1
        assert proxy.state is ProxyState.ACTIVE

    _run(vm, body)


def test_idle_upstream_is_deactivated_and_the_next_connection_activates_again() -> None:
    vm = FakeVM(boot_s=0.05)

    async def body(proxy: OnDemandProxy) -> None:
        # Before the exchange: the idle timer starts when the proxy's side closes, which can be
        # before the client has seen the end of the answer.
        began = time.monotonic()
        assert await _exchange(proxy, b"one") == b"one<eof>"
        await _until(lambda: vm.deactivations == 1)
        assert time.monotonic() - began >= 0.3 - 0.01  # the loop's timers may fire a tick early
        await _until(lambda: proxy.state is ProxyState.IDLE)
        assert await _exchange(proxy, b"two") == b"two<eof>"
        assert vm.activations == 2

    _run(vm, body, idle_timeout_s=0.3)


def test_an_open_quiet_connection_keeps_the_upstream_up() -> None:
    vm = FakeVM(boot_s=0.05)

    async def body(proxy: OnDemandProxy) -> None:
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"first")
        assert await reader.readexactly(5) == b"first"
        # The witness: a second proxy with the same idle timeout, whose connections close, goes
        # idle twice. Two idle timeouts have then passed without traffic on the open one.
        control_vm = FakeVM(boot_s=0.05)
        control = OnDemandProxy(
            ("127.0.0.1", 0), control_vm.activate, control_vm.deactivate, 0.2, name="control"
        )
        await control.start()
        try:
            for _ in range(2):
                idled = control_vm.deactivations + 1
                assert await _exchange(control, b"c") == b"c<eof>"
                await _until(lambda: control_vm.deactivations == idled, timeout=60)  # noqa: B023
        finally:
            await control.close()
            control_vm.crash()
        assert vm.deactivations == 0
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        writer.close()
        await writer.wait_closed()
        await _until(lambda: vm.deactivations == 1)
        assert vm.activations == 1

    _run(vm, body, idle_timeout_s=0.2)


def test_half_close_and_backpressure_carry_a_large_stream_both_ways() -> None:
    vm = FakeVM(boot_s=0.05)
    payload = os.urandom(32 << 20)

    async def body(proxy: OnDemandProxy) -> None:
        reader, writer = await asyncio.open_connection(*proxy.address)

        async def send() -> None:
            view = memoryview(payload)
            for start in range(0, len(payload), 1 << 20):
                writer.write(view[start : start + (1 << 20)])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        # A reader that does not read: the proxy must stop reading from the other side rather
        # than hold the stream in memory.
        first = await reader.readexactly(1 << 16)
        held = []
        for _ in range(50):
            await asyncio.sleep(0.01)
            held.append(proxy.buffered_bytes)
        assert max(held) <= 2 << 20, held
        rest = await asyncio.wait_for(reader.read(), 60)
        await sender
        assert first + rest == payload + b"<eof>"
        writer.close()
        await writer.wait_closed()

    _run(vm, body)


def test_failed_activation_closes_the_waiting_connections_and_the_next_one_retries() -> None:
    vm = FakeVM(boot_s=0.2, failures=1)

    async def body(proxy: OnDemandProxy) -> None:
        assert await asyncio.gather(*(_dropped(proxy) for _ in range(3))) == [True] * 3
        assert vm.activations == 1
        assert proxy.state is ProxyState.IDLE
        assert await _exchange(proxy, b"again") == b"again<eof>"
        assert vm.activations == 2

    _run(vm, body)


def test_a_dead_upstream_is_deactivated_and_the_next_connection_boots_it_again() -> None:
    vm = FakeVM(boot_s=0.05)

    async def body(proxy: OnDemandProxy) -> None:
        assert await _exchange(proxy, b"one") == b"one<eof>"
        vm.crash()
        assert await _dropped(proxy)
        await _until(lambda: vm.deactivations == 1)
        assert await _exchange(proxy, b"two") == b"two<eof>"
        assert vm.activations == 2

    _run(vm, body, connect_timeout_s=0.3)


def test_a_connection_retrying_a_forgotten_upstream_follows_the_new_activation() -> None:
    vm = FakeVM(boot_s=0.05)

    async def body(proxy: OnDemandProxy) -> None:
        assert await _exchange(proxy, b"one") == b"one<eof>"
        assert vm.server is not None
        dead = vm.server.server_address[:2]
        vm.crash()  # stopped behind the proxy's back
        # Count the proxy's connection attempts to the dead address, to wait until it retries.
        loop = asyncio.get_running_loop()
        real_connect = loop.create_connection
        attempts: list[tuple[object, object]] = []

        async def counting_connect(
            factory: Any, host: Any = None, port: Any = None, **kw: Any
        ) -> Any:
            attempts.append((host, port))
            return await real_connect(factory, host, port, **kw)

        loop.create_connection = counting_connect  # type: ignore[method-assign]
        try:
            pending = asyncio.create_task(_exchange(proxy, b"two"))
            await _until(lambda: attempts.count(dead) >= 2, timeout=60)  # it is retrying
            proxy.forget_upstream()  # what the controller does when the manager reports the stop
            # Far below connect_timeout_s: only following the new activation answers in time.
            assert await asyncio.wait_for(pending, 120) == b"two<eof>"
        finally:
            del loop.create_connection
        assert vm.activations == 2
        assert vm.deactivations == 0

    _run(vm, body, connect_timeout_s=3600.0)


def test_wake_activates_without_a_connection_and_idles_out() -> None:
    vm = FakeVM(boot_s=0.05)

    async def body(proxy: OnDemandProxy) -> None:
        upstream = await proxy.wake()
        assert vm.server is not None
        assert upstream[1] == vm.server.server_address[1]
        assert proxy.state is ProxyState.ACTIVE
        await _until(lambda: proxy.state is ProxyState.IDLE)
        assert vm.deactivations == 1

    _run(vm, body, idle_timeout_s=0.2)


def test_close_drops_connections_but_leaves_the_upstream_running() -> None:
    vm = FakeVM(boot_s=0.05)

    async def main() -> None:
        proxy = OnDemandProxy(("127.0.0.1", 0), vm.activate, vm.deactivate, 5.0)
        await proxy.start()
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"hi")
        assert await reader.readexactly(2) == b"hi"
        address = proxy.address
        await proxy.close()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
        assert vm.deactivations == 0
        assert vm.server is not None
        with pytest.raises(OSError):
            await asyncio.open_connection(*address)
        vm.crash()

    asyncio.run(main())


def test_a_busy_port_is_refused_with_a_clear_error() -> None:
    port = free_port()
    vm = FakeVM()

    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen()
            proxy = OnDemandProxy(("127.0.0.1", port), vm.activate, vm.deactivate, 5.0, name="web")
            with pytest.raises(InstanceError, match=rf"127\.0\.0\.1:{port}.*already in use"):
                await proxy.start()
            await proxy.close()
        assert vm.activations == 0

    asyncio.run(main())
