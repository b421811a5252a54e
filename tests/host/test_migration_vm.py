"""Moving instances between two real agents on this machine (real QEMU, real TLS channel)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit.agent import AgentProcess
from kit.host import wait_http
from kit.migration import accepted, agg_hub, on, post_readings, two_agents
from kit.net import free_port
from kit.relay import Relay
from ukedge.errors import AgentError, MigrationError
from ukedge.host import (
    AgentClient,
    HealthStatus,
    InstanceState,
    ResultSpool,
    move_instance,
    run_request,
)
from ukedge.host.migration import MigrationOffer, MigrationStatus, Mode, Step

pytestmark = pytest.mark.vm


__all__ = ["agg_hub"]


@pytest.fixture
def agents(
    tmp_path: Path, agg_hub: str, request: pytest.FixtureRequest
) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """Agents a and b; parametrised True (indirect), b takes post-copy moves: its QEMU keeps
    root, as QEMU 7.2 takes userfaultfd (the receiving side of post-copy) as an unprivileged
    user only where vm.unprivileged_userfaultfd is 1."""
    postcopy_target = ("--qemu-user", "") if getattr(request, "param", False) else ()
    with two_agents(tmp_path, agg_hub, *postcopy_target) as pair:
        yield pair


def _until(done: Callable[[], bool], timeout: float = 120, every: float = 0.1) -> None:
    """Polls ``done`` until it holds or ``timeout`` s pass; the caller asserts what it needs."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(every)


def _counts_on(port: int, counted: int, more: int) -> None:
    """The app on ``port`` has counted ``counted`` readings and goes on counting."""
    assert accepted(port) == counted
    post_readings(port, more)
    assert accepted(port) == counted + more


def _refuses(port: int) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def _events(agent: AgentProcess) -> list[str]:
    lines = (agent.data / "instances" / "events.jsonl").read_text().splitlines()
    return [json.loads(e)["action"] for e in lines]


def _details(agent: AgentProcess, action: str) -> list[str]:
    lines = (agent.data / "instances" / "events.jsonl").read_text().splitlines()
    return [str(e.get("detail")) for e in map(json.loads, lines) if e["action"] == action]


def _swept(target: AgentProcess) -> None:
    """The target drops a move it will not finish (once the source says so or stays away)."""
    _until(lambda: not any((target.data / "instances").glob("*/vm")), every=0.2)
    assert target.client().list(all_instances=True) == []


class _Once:
    """An ``on_status`` callback doing ``action`` the first time the move reports one of
    ``steps`` (to kill or cancel at a chosen point of a move)."""

    def __init__(self, action: Callable[[MigrationStatus], object], *steps: Step) -> None:
        self.action = action
        self.steps = steps
        self.fired = False

    def __call__(self, status: MigrationStatus) -> None:
        if not self.fired and status.step in self.steps:
            self.action(status)
            self.fired = True


def _sensor(a: AgentProcess, port: int) -> AgentClient:
    client = a.client()
    client.run(
        run_request(
            image="sensor-agg:1", name="agg", ports=on(port), restart={"name": "on-failure"}
        )
    )
    assert wait_http(f"http://127.0.0.1:{port}/healthz", timeout=180).status_code == 200
    # and the agent has seen it healthy (its health history)
    _until(lambda: client.get("agg").health is HealthStatus.HEALTHY)
    return client


@dataclass
class _Pair:
    """Two agents, sensor-agg running healthy on ``a`` at ``port_a`` (``source`` is a's client),
    and a free ``port_b`` for it on ``b``."""

    a: AgentProcess
    b: AgentProcess
    port_a: int
    port_b: int
    source: AgentClient

    def move(self, name: str = "agg", **options: Any) -> MigrationStatus:
        """Moves ``name`` to ``b``, published there on ``port_b``."""
        return move_instance(self.source, name, self.b.client(), ports=on(self.port_b), **options)


@pytest.fixture
def pair(agents: tuple[AgentProcess, AgentProcess]) -> _Pair:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    return _Pair(a, b, port_a, port_b, _sensor(a, port_a))


def test_snapshot_move_keeps_identity_and_memory(pair: _Pair) -> None:
    a, b, port_a, port_b, source = pair.a, pair.b, pair.port_a, pair.port_b, pair.source
    post_readings(port_a, 25)
    post_readings(port_a, 17, sensor="t2")
    before = source.get("agg")
    assert accepted(port_a) == 42
    console = b"".join(source.follow("agg", follow=False))
    assert b"sensor-agg listening on" in console

    seen: list[Step] = []
    status = pair.move(mode=Mode.SNAPSHOT, on_status=lambda s: seen.append(s.step))
    assert status.step is Step.DONE and status.error is None
    assert status.target_ports == on(port_b)
    assert status.state_bytes > 0 and status.sent_bytes > 0
    moved = b.client().get("agg")
    assert moved.id == before.id and moved.name == "agg"
    assert moved.state is InstanceState.RUNNING and moved.restored
    assert moved.restart_count == before.restart_count and moved.runs == before.runs
    assert moved.health is HealthStatus.HEALTHY and moved.healthy_at == before.healthy_at
    # The app's memory came along: every reading counted before the move is still counted.
    _counts_on(port_b, 42, 8)
    assert [i.name for i in source.list(all_instances=True)] == []
    # Its console came along too (the app's start-up lines).
    logs = b"".join(b.client().follow("agg", follow=False))
    assert logs.startswith(console)
    assert "migrate-out" in _events(a)


def test_a_target_killed_mid_move_leaves_the_source_serving(pair: _Pair) -> None:
    b, port_a, source = pair.b, pair.port_a, pair.source
    post_readings(port_a, 30)
    kill_target = _Once(lambda _s: b.kill9(), Step.TRANSFER, Step.RESTORE)
    with pytest.raises(MigrationError) as info:
        pair.move(compress=9, on_status=kill_target)  # compress: slower, so the poll sees it
    assert kill_target.fired
    assert "runs on at the source" in str(info.value)
    # The source runs on, unpaused, with everything it had counted.
    assert source.get("agg").state is InstanceState.RUNNING
    _counts_on(port_a, 30, 5)
    # The restarted target sweeps what the killed one left: nothing runs twice.
    b.start()
    assert [i.name for i in b.client().list(all_instances=True)] == []
    assert not any((b.data / "instances").glob("*/vm"))
    _refuses(pair.port_b)


def test_a_cold_move_boots_on_the_target_then_stops_the_source(pair: _Pair) -> None:
    before = pair.source.get("agg")
    status = pair.move(mode=Mode.COLD)
    assert status.step is Step.DONE
    moved = pair.b.client().get("agg")
    assert moved.id == before.id and moved.state is InstanceState.RUNNING
    assert not moved.restored and moved.runs == before.runs + 1
    assert accepted(pair.port_b) == 0  # a cold move keeps no memory
    assert pair.source.list(all_instances=True) == []


def test_a_move_of_an_unknown_or_stopped_instance_is_refused(pair: _Pair) -> None:
    source = pair.source
    source.stop("agg")
    with pytest.raises(MigrationError, match="only a running instance moves"):
        move_instance(source, "agg", pair.b.client())
    assert source.get("agg").state is InstanceState.EXITED
    assert pair.b.client().list(all_instances=True) == []


class _Stream:
    """Posts ``batch`` readings at a time to whichever port is current; counts the readings
    acknowledged and those sent but not answered (the guest may or may not have counted
    those). A large batch makes the guest dirty more memory."""

    def __init__(self, port: int, batch: int = 1) -> None:
        self.port = port
        self.batch = batch
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
                        json=[{"sensor": "s", "value": 1.0}] * self.batch,
                    )
                except httpx.TransportError:
                    self.unanswered += self.batch
                    time.sleep(0.01)
                    continue
                if r.status_code == 200:
                    self.acked += self.batch
                time.sleep(0.01)


def _throttled(rate: float) -> Callable[[MigrationOffer], tuple[str, int]]:
    """A ``via`` for moves through a relay that carries ``rate`` bytes/s each way."""

    def via(offer: MigrationOffer) -> tuple[str, int]:
        return "127.0.0.1", Relay((offer.host, offer.port), rate_bytes_s=rate).port

    return via


#: Live moves under a stream of readings: QEMU's default limit; a 1 ms limit, which makes
#: pre-copy take several passes (QEMU 7.2 under TCG lost guest writes made after a pass's
#: dirty-bitmap sync unless the RAM size avoids its fast path, RAM_PAD, and the moved guest's
#: kernel panicked); and post-copy (b takes post-copy moves) over an 8 Mbit/s link, readings
#: posted 400 at a time so the guest dirties more: what is left at the switch then takes about
#: a second to go, long enough for the target to take over before it has all arrived.
_LIVE_MOVES = [
    pytest.param({"downtime_limit_ms": None}, False, id="None"),
    pytest.param({"downtime_limit_ms": 1}, False, id="1"),
    pytest.param(
        {"downtime_limit_ms": 1, "postcopy": True, "throttle": 1_000_000, "batch": 400},
        True,
        id="postcopy",
    ),
]


@pytest.mark.parametrize(("options", "agents"), _LIVE_MOVES, indirect=["agents"])
def test_live_move_under_a_stream_of_readings_loses_none(
    pair: _Pair, options: dict[str, Any]
) -> None:
    before = pair.source.get("agg")
    options = dict(options)
    batch = options.pop("batch", 1)
    rate = options.pop("throttle", None)
    if rate is not None:  # a slow link: what is left at the switch takes a while to go
        options["via"] = _throttled(rate)
    with _Stream(pair.port_a, batch) as stream:
        _until(lambda: stream.acked >= 20 * batch, timeout=float("inf"), every=0.05)
        status = pair.move(mode=Mode.LIVE, **options)
        stream.port = pair.port_b
        during = stream.acked
        _until(lambda: stream.acked >= during + 20 * batch, every=0.05)
    assert status.step is Step.DONE, status
    assert status.qemu["ram_transferred"] > 0 and status.qemu["downtime_ms"] >= 0
    moved = pair.b.client().get("agg")
    assert moved.id == before.id and moved.state is InstanceState.RUNNING
    counted = accepted(pair.port_b)
    # Every reading acknowledged before, during and after the move is counted on the target;
    # a reading whose answer was lost at the switch-over may or may not have been.
    assert stream.acked <= counted <= stream.acked + stream.unanswered
    assert pair.source.list(all_instances=True) == []
    if options.get("postcopy"):
        assert status.qemu["postcopy"] == 1 and "migrate-postcopy" in _events(pair.a), status
        assert status.qemu["postcopy_bytes"] > 0, status  # RAM went after the switch
        # The target took the instance over at the switch: its QEMU still received the rest
        # of the RAM when the guest ran there and the instance was recorded there (QEMU's own
        # word, in the target's migrate-in event; the move's steps show the source's side).
        (moved_in,) = _details(pair.b, "migrate-in")
        assert "post-copy: running here while the rest of its memory arrives" in moved_in


def test_a_target_whose_qemu_cannot_take_postcopy_refuses_and_the_source_runs_on(
    pair: _Pair,
) -> None:
    if Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() != "0":
        pytest.skip("unprivileged QEMU may use userfaultfd on this host")
    post_readings(pair.port_a, 5)
    with pytest.raises(MigrationError, match=r"vm\.unprivileged_userfaultfd=1"):
        pair.move(mode=Mode.LIVE, postcopy=True)
    assert pair.source.get("agg").state is InstanceState.RUNNING
    _counts_on(pair.port_a, 5, 3)
    _swept(pair.b)


@pytest.mark.parametrize("agents", [True], indirect=True)
def test_a_postcopy_live_move_keeps_the_counts(pair: _Pair) -> None:
    """The guest is quiet during the move (one that served readings through a post-copy move
    broke until RAM_PAD: docs/migration.md, "A QEMU bug under TCG"). A quiet guest may
    converge before QEMU would switch (it then completes in pre-copy); either way it arrives
    whole. The switch itself is checked under a stream of readings (above)."""
    post_readings(pair.port_a, 30)
    post_readings(pair.port_a, 12, sensor="t2")
    before = pair.source.get("agg")
    # A 1 ms limit on a 20 Mbit/s link: pre-copy mostly does not converge, and the move
    # switches after the first pass.
    status = pair.move(
        mode=Mode.LIVE, postcopy=True, downtime_limit_ms=1, via=_throttled(2_500_000)
    )
    assert status.step is Step.DONE and status.error is None, status
    switched = status.qemu["postcopy"] == 1
    assert switched == ("postcopy" in status.steps) == ("migrate-postcopy" in _events(pair.a))
    moved = pair.b.client().get("agg")
    assert moved.id == before.id and moved.state is InstanceState.RUNNING
    _counts_on(pair.port_b, 42, 8)
    assert pair.source.list(all_instances=True) == []


@pytest.mark.parametrize("agents", [True], indirect=True)
def test_a_link_cut_after_the_postcopy_switch_loses_the_state_but_never_doubles_it(
    pair: _Pair,
) -> None:
    """Cut the tunnel once QEMU has switched: the move fails with the documented loss (before
    the target's commit the source keeps the record, after it the target does), says so in
    the events, and the instance is on exactly one node."""
    relays: list[Relay] = []

    def tunnel(offer: MigrationOffer) -> tuple[str, int]:
        relays.append(Relay((offer.host, offer.port), rate_bytes_s=500_000))
        return "127.0.0.1", relays[-1].port

    cut = _Once(lambda _s: relays[0].kill(), Step.POSTCOPY, Step.RESTORE, Step.COMMIT)
    with _Stream(pair.port_a, batch=400):
        try:
            status = pair.move(
                mode=Mode.LIVE, postcopy=True, downtime_limit_ms=1, via=tunnel, on_status=cut
            )
        except MigrationError as exc:  # failed before the target committed
            assert "state is lost" in str(exc)
            owner, other = pair.source, pair.b.client()
        else:  # the target had committed: done, with the loss in the error
            assert status.error is not None and "memory is lost" in status.error, status
            owner, other = pair.b.client(), pair.source
    assert cut.fired
    assert "migrate-failed" in _events(pair.a)
    assert [i.name for i in other.list(all_instances=True)] == []
    assert [i.name for i in owner.list(all_instances=True)] == ["agg"]


def test_the_cli_moves_and_prints_the_new_ports(pair: _Pair) -> None:
    a, b, port_b = pair.a, pair.b, pair.port_b
    post_readings(pair.port_a, 7)
    wrong = a.cli("migrate", "agg", "--to", b.url, "--mode", "teleport", check=False)
    assert wrong.returncode != 0 and "--mode must be cold, snapshot or live" in wrong.stderr
    done = a.cli(
        "migrate", "agg", "--to", b.url, "--to-token", b.token, "-p", f"{port_b}:8080", "--json"
    )
    status = json.loads(done.stdout)
    assert status["step"] == "done" and status["target_ports"][0]["host_port"] == port_b
    assert accepted(port_b) == 7
    assert pair.source.list(all_instances=True) == []


def test_a_cancelled_move_leaves_the_source_running(pair: _Pair) -> None:
    b, port_a, source = pair.b, pair.port_a, pair.source
    post_readings(port_a, 3)
    cancel = _Once(lambda s: source.cancel_migration(s.id), Step.TRANSFER)
    with pytest.raises(MigrationError, match="cancelled"):
        pair.move(compress=9, on_status=cancel)
    assert source.get("agg").state is InstanceState.RUNNING
    assert accepted(port_a) == 3
    _swept(b)  # the target aborts once the source says so
    assert not any((b.data / "instances").glob("*/vm"))


def test_a_cut_tunnel_gives_the_source_back(pair: _Pair) -> None:
    port_a = pair.port_a
    post_readings(port_a, 11)
    relays: list[Relay] = []

    def tunnel(offer: MigrationOffer) -> tuple[str, int]:
        relay = Relay((offer.host, offer.port), rate_bytes_s=2_000_000)
        relays.append(relay)
        return "127.0.0.1", relay.port

    def cut(status: Any) -> None:
        if status.step is Step.TRANSFER and relays and status.sent_bytes > 0:
            relays[0].kill()

    with pytest.raises(MigrationError, match="runs on at the source"):
        pair.move(via=tunnel, on_status=cut)
    assert relays and relays[0].bytes > 0
    assert pair.source.get("agg").state is InstanceState.RUNNING
    post_readings(port_a, 1)
    assert accepted(port_a) == 12
    # The target gives up the half-received move once the source stays away.
    assert pair.b.client().list(all_instances=True) == []


def _results_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def _feed_until(port: int, results: Path, lines: int) -> list[str]:
    """Posts readings to the app on ``port`` until its ``results`` file holds ``lines`` lines
    (or two minutes pass); returns the lines it holds."""

    def enough() -> bool:
        if len(_results_lines(results)) >= lines:
            return True
        post_readings(port, 2)
        return False

    _until(enough, every=0.3)
    return _results_lines(results)


@pytest.mark.parametrize("mode", [Mode.SNAPSHOT, Mode.LIVE])
def test_results_are_numbered_on_without_gap_or_duplicate(
    agents: tuple[AgentProcess, AgentProcess], mode: Mode
) -> None:
    a, b = agents
    port_a, port_b = free_port(), free_port()
    source = a.client()
    instance = source.run(
        run_request(image="sensor-agg:1", name="agg", ports=on(port_a), env={"WINDOW_SECONDS": "1"})
    )
    wait_http(f"http://127.0.0.1:{port_a}/healthz", timeout=180)
    results_a = a.data / "instances" / instance.id / "vm" / "results.jsonl"
    before = len(_feed_until(port_a, results_a, 3))
    assert before >= 3
    move_instance(source, "agg", b.client(), mode=mode, ports=on(port_b))
    results_b = b.data / "instances" / instance.id / "vm" / "results.jsonl"
    lines = _feed_until(port_b, results_b, before + 3)
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
            ports=on(port_a),
            on_demand=True,
            idle_timeout_s=600.0,
        )
    )
    post_readings(port_a, 9)  # the first connection boots it behind the source's proxy
    assert source.get("lazy").state is InstanceState.RUNNING
    idle = source.list(all_instances=True)
    assert [i.name for i in idle] == ["lazy"]
    status = move_instance(source, "lazy", b.client(), ports=on(port_b))
    assert status.step is Step.DONE
    moved = b.client().get("lazy")
    assert moved.on_demand and moved.state is InstanceState.RUNNING
    # The target's proxy listens on the new port and reaches the moved guest, counts and all.
    assert accepted(port_b) == 9
    _refuses(port_a)
    assert source.list(all_instances=True) == []


def test_a_source_agent_killed_mid_move_resumes_its_instance_on_restart(pair: _Pair) -> None:
    a, port_a = pair.a, pair.port_a
    post_readings(port_a, 13)
    # The guest is paused at the transfer: the agent froze it for the snapshot.
    kill_source = _Once(lambda _s: a.kill9(), Step.TRANSFER)
    with pytest.raises(AgentError):
        pair.move(compress=9, on_status=kill_source)
    assert kill_source.fired
    a.start()  # the next agent gives the frozen guest back
    assert a.client().get("agg").state is InstanceState.RUNNING
    _counts_on(port_a, 13, 2)
    _swept(pair.b)  # the target aborts once the channel is gone for good
    assert "migrate-failed" in _events(a)


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
    post_readings(port_a, 11)
    status = move_instance(source, "agg", b.client(), mode=mode, ports=on(port_b))
    assert status.step is Step.DONE and status.error is None, status
    _counts_on(port_b, 11, 2)
    assert source.list(all_instances=True) == []
