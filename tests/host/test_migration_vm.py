"""Moving instances between two real agents on this machine (real QEMU, real TLS channel)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit.agent import AgentProcess, push_examples, running_agent
from kit.host import wait_http
from kit.hub import RunningHub, start_hub
from kit.net import free_port
from kit.relay import Relay
from ukedge.errors import AgentError, MigrationError
from ukedge.host import (
    HealthStatus,
    InstanceState,
    PortMapping,
    ResultSpool,
    move_instance,
    run_request,
)
from ukedge.host.migration import MigrationOffer, Mode, Step
from ukedge.image import ImageStore

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, example_store: Path) -> Iterator[str]:
    running: RunningHub = start_hub(tmp_path_factory.mktemp("hub"))
    addr = running.url.removeprefix("http://")
    push_examples(ImageStore(example_store), addr, "sensor-agg:1")
    yield addr
    running.stop()


@pytest.fixture
def agents(tmp_path: Path, hub: str) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    with (
        running_agent(tmp_path / "a", "--hub", hub, "--name", "node-a") as a,
        running_agent(tmp_path / "b", "--hub", hub, "--name", "node-b") as b,
    ):
        yield a, b


def _post(port: int, n: int, sensor: str = "t1") -> None:
    readings = [{"sensor": sensor, "value": float(i)} for i in range(n)]
    r = httpx.post(f"http://127.0.0.1:{port}/readings", json=readings, timeout=30)
    assert r.status_code == 200, r.text


def _accepted(port: int) -> int:
    doc: dict[str, Any] = wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120).json()
    return int(doc["accepted"])


def _sensor(a: AgentProcess, port: int) -> Any:
    client = a.client()
    client.run(
        run_request(
            image="sensor-agg:1",
            name="agg",
            ports=[PortMapping(host_port=port, guest_port=8080)],
            restart={"name": "on-failure"},
        )
    )
    assert wait_http(f"http://127.0.0.1:{port}/healthz", timeout=180).status_code == 200
    deadline = time.monotonic() + 120  # and the agent has seen it healthy (its health history)
    while client.get("agg").health is not HealthStatus.HEALTHY and time.monotonic() < deadline:
        time.sleep(0.1)
    return client


def test_snapshot_move_keeps_identity_and_memory(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = _sensor(a, port_a)
    _post(port_a, 25)
    _post(port_a, 17, sensor="t2")
    before = source.get("agg")
    assert _accepted(port_a) == 42

    seen: list[Step] = []
    status = move_instance(
        source,
        "agg",
        b.client(),
        mode=Mode.SNAPSHOT,
        ports=[PortMapping(host_port=port_b, guest_port=8080)],
        on_status=lambda s: seen.append(s.step),
    )
    assert status.step is Step.DONE and status.error is None
    assert status.target_ports == [PortMapping(host_port=port_b, guest_port=8080)]
    assert status.state_bytes > 0 and status.sent_bytes > 0
    moved = b.client().get("agg")
    assert moved.id == before.id and moved.name == "agg"
    assert moved.state is InstanceState.RUNNING and moved.restored
    assert moved.restart_count == before.restart_count and moved.runs == before.runs
    assert moved.health is HealthStatus.HEALTHY and moved.healthy_at == before.healthy_at
    # The app's memory came along: every reading counted before the move is still counted.
    assert _accepted(port_b) == 42
    _post(port_b, 8)
    assert _accepted(port_b) == 50
    assert [i.name for i in source.list(all_instances=True)] == []
    # Its console came along too (the app's start-up lines).
    logs = b"".join(b.client().follow("agg", follow=False))
    assert b"sensor-agg" in logs or len(logs) > 0
    events = (a.data / "instances" / "events.jsonl").read_text().splitlines()
    assert any(json.loads(e)["action"] == "migrate-out" for e in events)


def test_a_target_killed_mid_move_leaves_the_source_serving(
    agents: tuple[AgentProcess, AgentProcess], tmp_path: Path
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = _sensor(a, port_a)
    _post(port_a, 30)
    target = b.client()
    killed = False

    def kill_target(status: Any) -> None:
        nonlocal killed
        if not killed and status.step in (Step.TRANSFER, Step.RESTORE):
            b.kill9()
            killed = True

    with pytest.raises(MigrationError) as info:
        move_instance(
            source,
            "agg",
            target,
            ports=[PortMapping(host_port=port_b, guest_port=8080)],
            compress=9,  # slower, so the poll sees the transfer
            on_status=kill_target,
        )
    assert killed
    assert "runs on at the source" in str(info.value)
    # The source runs on, unpaused, with everything it had counted.
    instance = source.get("agg")
    assert instance.state is InstanceState.RUNNING
    assert _accepted(port_a) == 30
    _post(port_a, 5)
    assert _accepted(port_a) == 35
    # The restarted target sweeps what the killed one left: nothing runs twice.
    b.start()
    assert [i.name for i in b.client().list(all_instances=True)] == []
    assert not any((b.data / "instances").glob("*/vm"))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port_b}/healthz", timeout=2)


def test_a_cold_move_boots_on_the_target_then_stops_the_source(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = _sensor(a, port_a)
    before = source.get("agg")
    status = move_instance(
        source,
        "agg",
        b.client(),
        mode=Mode.COLD,
        ports=[PortMapping(host_port=port_b, guest_port=8080)],
    )
    assert status.step is Step.DONE
    moved = b.client().get("agg")
    assert moved.id == before.id and moved.state is InstanceState.RUNNING
    assert not moved.restored and moved.runs == before.runs + 1
    assert _accepted(port_b) == 0  # a cold move keeps no memory
    assert source.list(all_instances=True) == []


def test_a_move_of_an_unknown_or_stopped_instance_is_refused(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a = free_port()
    source = _sensor(a, port_a)
    source.stop("agg")
    with pytest.raises(MigrationError, match="only a running instance moves"):
        move_instance(source, "agg", b.client())
    assert source.get("agg").state is InstanceState.EXITED
    assert b.client().list(all_instances=True) == []


class _Stream:
    """Posts one reading at a time to whichever port is current; counts what was acknowledged
    and what was sent but not answered (the guest may or may not have counted those)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked = 0
        self.unanswered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Stream:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(
                        f"http://127.0.0.1:{self.port}/readings",
                        json=[{"sensor": "s", "value": 1.0}],
                    )
                except httpx.TransportError:
                    self.unanswered += 1
                    time.sleep(0.01)
                    continue
                if r.status_code == 200:
                    self.acked += 1
                time.sleep(0.01)


def test_live_move_under_a_stream_of_readings_loses_none(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = _sensor(a, port_a)
    before = source.get("agg")
    with _Stream(port_a) as stream:
        while stream.acked < 20:
            time.sleep(0.05)
        status = move_instance(
            source,
            "agg",
            b.client(),
            mode=Mode.LIVE,
            ports=[PortMapping(host_port=port_b, guest_port=8080)],
        )
        stream.port = port_b
        during = stream.acked
        deadline = time.monotonic() + 120
        while stream.acked < during + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert status.step is Step.DONE, status
    assert status.qemu["ram_transferred"] > 0 and status.qemu["downtime_ms"] >= 0
    moved = b.client().get("agg")
    assert moved.id == before.id and moved.state is InstanceState.RUNNING
    counted = _accepted(port_b)
    # Every reading acknowledged before, during and after the move is counted on the target;
    # a reading whose answer was lost at the switch-over may or may not have been.
    assert stream.acked <= counted <= stream.acked + stream.unanswered
    assert source.list(all_instances=True) == []


def test_the_cli_moves_and_prints_the_new_ports(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = _sensor(a, port_a)
    _post(port_a, 7)
    wrong = a.cli("migrate", "agg", "--to", b.url, "--mode", "teleport", check=False)
    assert wrong.returncode != 0 and "--mode must be cold, snapshot or live" in wrong.stderr
    done = a.cli(
        "migrate", "agg", "--to", b.url, "--to-token", b.token, "-p", f"{port_b}:8080", "--json"
    )
    status = json.loads(done.stdout)
    assert status["step"] == "done" and status["target_ports"][0]["host_port"] == port_b
    assert _accepted(port_b) == 7
    assert source.list(all_instances=True) == []


def test_a_cancelled_move_leaves_the_source_running(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = _sensor(a, port_a)
    _post(port_a, 3)
    target = b.client()
    cancelled = False

    def cancel(status: Any) -> None:
        nonlocal cancelled
        if not cancelled and status.step is Step.TRANSFER:
            source.cancel_migration(status.id)
            cancelled = True

    with pytest.raises(MigrationError, match="cancelled"):
        move_instance(
            source,
            "agg",
            target,
            ports=[PortMapping(host_port=port_b, guest_port=8080)],
            compress=9,
            on_status=cancel,
        )
    assert source.get("agg").state is InstanceState.RUNNING
    assert _accepted(port_a) == 3
    deadline = time.monotonic() + 120
    while any((b.data / "instances").glob("*/vm")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the target aborts once the source says so
    assert target.list(all_instances=True) == []
    assert not any((b.data / "instances").glob("*/vm"))


def test_a_cut_tunnel_gives_the_source_back(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = _sensor(a, port_a)
    _post(port_a, 11)
    relays: list[Relay] = []

    def tunnel(offer: MigrationOffer) -> tuple[str, int]:
        relay = Relay((offer.host, offer.port), rate_bytes_s=2_000_000)
        relays.append(relay)
        return "127.0.0.1", relay.port

    def cut(status: Any) -> None:
        if status.step is Step.TRANSFER and relays and status.sent_bytes > 0:
            relays[0].kill()

    with pytest.raises(MigrationError, match="runs on at the source"):
        move_instance(
            source,
            "agg",
            b.client(),
            ports=[PortMapping(host_port=port_b, guest_port=8080)],
            via=tunnel,
            on_status=cut,
        )
    assert relays and relays[0].bytes > 0
    assert source.get("agg").state is InstanceState.RUNNING
    _post(port_a, 1)
    assert _accepted(port_a) == 12
    # The target gives up the half-received move once the source stays away.
    assert b.client().list(all_instances=True) == []


def _results_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


@pytest.mark.parametrize("mode", [Mode.SNAPSHOT, Mode.LIVE])
def test_results_are_numbered_on_without_gap_or_duplicate(
    agents: tuple[AgentProcess, AgentProcess], mode: Mode
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = a.client()
    instance = source.run(
        run_request(
            image="sensor-agg:1",
            name="agg",
            ports=[PortMapping(host_port=port_a, guest_port=8080)],
            env={"WINDOW_SECONDS": "1"},
        )
    )
    wait_http(f"http://127.0.0.1:{port_a}/healthz", timeout=180)
    results_a = a.data / "instances" / instance.id / "vm" / "results.jsonl"
    deadline = time.monotonic() + 120
    while len(_results_lines(results_a)) < 3 and time.monotonic() < deadline:
        _post(port_a, 2)
        time.sleep(0.3)
    before = len(_results_lines(results_a))
    assert before >= 3
    move_instance(
        source, "agg", b.client(), mode=mode, ports=[PortMapping(host_port=port_b, guest_port=8080)]
    )
    results_b = b.data / "instances" / instance.id / "vm" / "results.jsonl"
    deadline = time.monotonic() + 120
    while len(_results_lines(results_b)) < before + 3 and time.monotonic() < deadline:
        _post(port_b, 2)
        time.sleep(0.3)
    lines = _results_lines(results_b)
    assert len(lines) >= before + 3
    # What the source numbered (its spool delivers those), then what the target numbers on.
    spool_a = ResultSpool(a.data / "results.db")
    spool_b = ResultSpool(b.data / "results.db")
    try:
        spool_b.ingest_file(instance.id, "node-b", results_b)  # as its forwarder would
        numbered = spool_a.records(instance.id) + spool_b.records(instance.id)
    finally:
        spool_a.close()
        spool_b.close()
    assert [r.seq for r in numbered] == list(range(1, len(numbered) + 1))
    assert {r.node for r in numbered[:before]} == {"node-a"}
    assert numbered[-1].node == "node-b"
    assert [r.line for r in numbered] == lines[: len(numbered)]
    assert len(numbered) >= len(lines) - 1  # all but a line being written just now


def test_a_snapshot_move_of_an_on_demand_instance_moves_its_listener(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = a.client()
    source.run(
        run_request(
            image="sensor-agg:1",
            name="lazy",
            ports=[PortMapping(host_port=port_a, guest_port=8080)],
            on_demand=True,
            idle_timeout_s=600.0,
        )
    )
    _post(port_a, 9)  # the first connection boots it behind the source's proxy
    assert source.get("lazy").state is InstanceState.RUNNING
    idle = source.list(all_instances=True)
    assert [i.name for i in idle] == ["lazy"]
    status = move_instance(
        source, "lazy", b.client(), ports=[PortMapping(host_port=port_b, guest_port=8080)]
    )
    assert status.step is Step.DONE
    moved = b.client().get("lazy")
    assert moved.on_demand and moved.state is InstanceState.RUNNING
    # The target's proxy listens on the new port and reaches the moved guest, counts and all.
    assert _accepted(port_b) == 9
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port_a}/healthz", timeout=2)
    assert source.list(all_instances=True) == []


def test_a_source_agent_killed_mid_move_resumes_its_instance_on_restart(
    agents: tuple[AgentProcess, AgentProcess],
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = _sensor(a, port_a)
    _post(port_a, 13)
    killed = False

    def kill_source(status: Any) -> None:
        nonlocal killed
        if not killed and status.step is Step.TRANSFER:
            a.kill9()  # the guest is paused: the agent froze it for the snapshot
            killed = True

    with pytest.raises(AgentError):
        move_instance(
            source,
            "agg",
            b.client(),
            ports=[PortMapping(host_port=port_b, guest_port=8080)],
            compress=9,
            on_status=kill_source,
        )
    assert killed
    a.start()  # the next agent gives the frozen guest back
    assert a.client().get("agg").state is InstanceState.RUNNING
    assert _accepted(port_a) == 13
    _post(port_a, 2)
    assert _accepted(port_a) == 15
    deadline = time.monotonic() + 120
    while any((b.data / "instances").glob("*/vm")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the target aborts once the channel is gone for good
    assert b.client().list(all_instances=True) == []
    events = (a.data / "instances" / "events.jsonl").read_text().splitlines()
    assert any(json.loads(e)["action"] == "migrate-failed" for e in events)


@pytest.mark.parametrize("mode", [Mode.SNAPSHOT, Mode.LIVE])
def test_a_clone_of_a_template_moves_to_a_node_without_the_template(
    agents: tuple[AgentProcess, AgentProcess], mode: Mode
) -> None:
    """A clone maps its template's RAM file privately; the node it moves to has no template, so
    the stream must carry the clone's RAM in full and name it as a plain machine's."""
    a, b = agents
    port_a, port_b = free_port(), free_port()
    a.client().prewarm(run_request(image="sensor-agg:1"))
    source = _sensor(a, port_a)
    assert source.get("agg").restored  # resumed from the template, not booted
    _post(port_a, 11)
    status = move_instance(
        source,
        "agg",
        b.client(),
        mode=mode,
        ports=[PortMapping(host_port=port_b, guest_port=8080)],
    )
    assert status.step is Step.DONE and status.error is None, status
    assert _accepted(port_b) == 11
    _post(port_b, 2)
    assert _accepted(port_b) == 13
    assert source.list(all_instances=True) == []
