"""On-demand sensor-agg in real QEMU behind OnDemandController: boots on the first request,
stops after idling, boots again; adopted, not rebooted, by a controller that starts anew."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from kit.net import free_port
from ukedge.host import (
    Instance,
    InstanceManager,
    InstanceState,
    OnDemandController,
    ProxyState,
    RunRequest,
    parse_port_mapping,
)

pytestmark = pytest.mark.vm

_BOOT_S = 120.0  # TCG on a busy 2-core machine


#: Long enough that a stall of the loaded test machine between two requests does not idle the
#: VM out under the test's feet; short enough to wait for.
_IDLE_S = 8.0


def _on_demand(manager: InstanceManager, port: int) -> Instance:
    return manager.create(
        RunRequest(
            image="sensor-agg:1",
            ports=[parse_port_mapping(f"{port}:8080")],
            on_demand=True,
            idle_timeout_s=_IDLE_S,
        )
    )


def _until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_first_request_boots_idle_stops_and_the_next_request_boots_again(
    manager: InstanceManager,
) -> None:
    port = free_port()
    instance = _on_demand(manager, port)
    controller = OnDemandController(manager)
    try:
        controller.sync()
        assert manager.get(instance.id).state is InstanceState.CREATED
        [proxy] = controller.proxies(instance.id)
        assert proxy.state is ProxyState.IDLE
        url = f"http://127.0.0.1:{port}"

        # Five first requests at once: one boot serves them all.
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda _: httpx.get(f"{url}/stats", timeout=_BOOT_S), range(5)))
        assert [a.status_code for a in answers] == [200] * 5
        running = manager.get(instance.id)
        assert running.state is InstanceState.RUNNING
        assert running.runs == 1
        posted = httpx.post(f"{url}/readings", json={"sensor": "t1", "value": 21.5}, timeout=10)
        assert posted.status_code < 300, posted.text

        # No connections for the idle timeout: the VM is stopped, the port still listens.
        _until(lambda: not manager.get(instance.id).state.active, 60)
        _until(lambda: proxy.state is ProxyState.IDLE, 10)
        assert manager.get(instance.id).state is InstanceState.EXITED

        again = httpx.get(f"{url}/stats", timeout=_BOOT_S)
        assert again.status_code == 200
        assert manager.get(instance.id).runs == 2
        assert proxy.activations == 2
    finally:
        controller.close()


def test_a_new_controller_adopts_the_running_vm_and_resumes_from_the_prewarm_snapshot(
    manager: InstanceManager,
) -> None:
    manager.prewarm(RunRequest(image="sensor-agg:1"))
    port = free_port()
    instance = _on_demand(manager, port)
    first = OnDemandController(manager)
    try:
        first.sync()
        assert httpx.get(f"http://127.0.0.1:{port}/stats", timeout=_BOOT_S).status_code == 200
        booted = manager.get(instance.id)
        assert booted.restored, "the on-demand start did not use the prewarm snapshot"
    finally:
        first.close()  # the agent goes away; its VM keeps running
    assert manager.get(instance.id).state is InstanceState.RUNNING

    second = OnDemandController(manager)
    try:
        second.sync()
        [proxy] = second.proxies(instance.id)
        assert httpx.get(f"http://127.0.0.1:{port}/stats", timeout=30).status_code == 200
        adopted = manager.get(instance.id)
        assert adopted.runs == booted.runs
        assert adopted.pid == booted.pid
        # Adopted VMs idle out like booted ones.
        _until(lambda: not manager.get(instance.id).state.active, 60)
        _until(lambda: proxy.state is ProxyState.IDLE, 10)
        # A removed instance loses its listener.
        manager.remove(instance.id)
        second.sync()
        assert second.proxies(instance.id) == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5)
    finally:
        second.close()


def test_a_stop_and_a_start_behind_the_proxys_back_are_followed(manager: InstanceManager) -> None:
    manager.prewarm(RunRequest(image="sensor-agg:1"))
    port = free_port()
    instance = _on_demand(manager, port)
    # The agent's way: the controller runs on a loop it is given (uvicorn's), sync() is called
    # from other threads.
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    controller = OnDemandController(manager, loop=loop)
    url = f"http://127.0.0.1:{port}/stats"
    try:
        controller.sync()
        [proxy] = controller.proxies(instance.id)
        assert httpx.get(url, timeout=_BOOT_S).status_code == 200
        assert proxy.state is ProxyState.ACTIVE

        # `ukedge stop`: the controller hears the manager's event and forgets the old VM, so
        # the next request boots a new one at once instead of trying the dead address.
        manager.stop(instance.id)
        _until(lambda: proxy.state is ProxyState.IDLE, 10)
        assert httpx.get(url, timeout=_BOOT_S).status_code == 200
        assert manager.get(instance.id).runs == 2

        # `ukedge stop` then `ukedge start` (new loopback forwards): followed, then idled out.
        manager.stop(instance.id)
        manager.start(instance.id)
        _until(lambda: proxy.upstream == manager.upstream(manager.get(instance.id), 8080), 30)
        assert httpx.get(url, timeout=30).status_code == 200
        assert manager.get(instance.id).runs == 3
        _until(lambda: not manager.get(instance.id).state.active, 60)
    finally:
        controller.close()
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
