"""The results forwarder: files → spool → sinks, with a real Mosquitto for what users rely on.

The first tests drive the forwarder's logic (back-off, sink isolation, partial acks, pacing)
with :class:`ListSink`, an in-memory sink; the ``interop`` tests run the whole path against a
real broker: results files written as the QEMU backend writes them, a paho subscriber reading.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from conformance.sinks import first_arrivals
from kit.mqtt import MosquittoBroker, Subscriber, needs_mosquitto
from ukedge import vmm
from ukedge.errors import UsageError
from ukedge.host import (
    Instance,
    InstanceManager,
    InstanceState,
    ResultForwarder,
    ResultSource,
    ResultSpool,
    RunRequest,
    UnpackedLayers,
    manager_sources,
)
from ukedge.host.results.sinks import ResultRecord, ResultSink, SinkUnavailable, check_batch, create
from ukedge.image import ImageStore


class ListSink:
    """Keeps what it is given; can be down, or confirm only part of each batch."""

    def __init__(self, name: str, *, confirm: int | None = None) -> None:
        self.name = name
        self.down = False
        self.broken = False
        self.confirm = confirm
        self.calls = 0
        self.got: list[ResultRecord] = []

    def deliver(self, batch: Sequence[ResultRecord]) -> int:
        self.calls += 1
        check_batch(self.name, batch)
        if self.broken:
            raise RuntimeError("sink bug")
        if self.down:
            raise SinkUnavailable(self.name, "down")
        taken = list(batch)[: self.confirm] if self.confirm else list(batch)
        self.got.extend(taken)
        return taken[-1].seq

    def close(self) -> None:
        pass


def write(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.writelines(line + "\n" for line in lines)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[ResultSpool]:
    s = ResultSpool(tmp_path / "spool.db")
    yield s
    s.close()


def sources_for(*items: tuple[str, Path]) -> list[ResultSource]:
    return [ResultSource(i, p) for i, p in items]


def test_a_sink_that_is_down_holds_back_only_itself(spool: ResultSpool, tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    write(f, '{"n": 1}', '{"n": 2}')
    up, down = ListSink("up"), ListSink("down")
    down.down = True
    # A back-off far longer than the test: "not again at once" must not depend on how fast
    # this machine runs the next round; the end of the back-off is reached by passing `now`.
    fwd = ResultForwarder(spool, [up, down], lambda: sources_for(("a", f)), "node-1", retry_min=60)
    result = fwd.run_once()
    assert (result.ingested, result.delivered, result.unavailable) == (2, {"up": 2}, ["down"])
    assert [r.seq for r in up.got] == [1, 2]
    calls = down.calls
    fwd.run_once()
    assert down.calls == calls, "a sink in back-off is not called again at once"
    down.down = False
    assert fwd.deliver(down, now=time.monotonic() + 61) == (2, False)
    assert fwd.run_once().delivered == {"up": 0, "down": 0}
    assert [r.seq for r in down.got] == [1, 2]
    assert spool.pending("up") == [] and spool.pending("down") == []


def test_a_broken_sink_does_not_stop_the_others(spool: ResultSpool, tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    write(f, "{}")
    broken, fine = ListSink("broken"), ListSink("fine")
    broken.broken = True
    fwd = ResultForwarder(spool, [broken, fine], lambda: sources_for(("a", f)), "n")
    result = fwd.run_once()
    assert result.unavailable == ["broken"] and result.delivered == {"fine": 1}
    assert spool.acked("broken", "a") == 0


def test_partial_confirmations_are_retried_until_all_arrive(
    spool: ResultSpool, tmp_path: Path
) -> None:
    f, g = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write(f, *(f'{{"i": {i}}}' for i in range(10)))
    write(g, *(f'{{"j": {i}}}' for i in range(3)))
    sink = ListSink("slow", confirm=3)
    fwd = ResultForwarder(spool, [sink], lambda: sources_for(("a", f), ("b", g)), "n", batch=4)
    for _ in range(10):
        result = fwd.run_once()
        if not spool.pending("slow"):
            break
        assert result.more, "a partial confirmation means more is waiting"
    else:
        pytest.fail("ten rounds did not deliver 13 records at 3 per batch")
    assert [r.seq for r in sink.got if r.instance_id == "a"] == list(range(1, 11))
    assert [r.seq for r in sink.got if r.instance_id == "b"] == [1, 2, 3]


def test_a_sink_no_longer_configured_stops_holding_records_back(
    spool: ResultSpool, tmp_path: Path
) -> None:
    f = tmp_path / "a.jsonl"
    write(f, "{}")
    gone = ListSink("mqtt://old:1883")
    gone.down = True
    ResultForwarder(spool, [gone, ListSink("kept")], lambda: sources_for(("a", f)), "n").run_once()
    assert spool.sinks() == ["kept", "mqtt://old:1883"]
    ResultForwarder(spool, [ListSink("kept")], lambda: sources_for(("a", f)), "n")
    assert spool.sinks() == ["kept"]


def test_settings_are_checked(spool: ResultSpool) -> None:
    with pytest.raises(UsageError, match="unique"):
        ResultForwarder(spool, [ListSink("x"), ListSink("x")], list, "n")
    with pytest.raises(UsageError, match="batch"):
        ResultForwarder(spool, [], list, "n", batch=0)


def test_the_thread_paces_itself_and_stops(spool: ResultSpool, tmp_path: Path) -> None:
    calls = 0
    f = tmp_path / "a.jsonl"

    def sources() -> list[ResultSource]:
        nonlocal calls
        calls += 1
        return sources_for(("a", f))

    sink = ListSink("s")
    fwd = ResultForwarder(spool, [sink], sources, "n", interval=0.001)
    assert fwd.interval == 0.05
    with fwd:
        assert fwd.running
        with pytest.raises(UsageError, match="already running"):
            fwd.start()
        write(f, '{"late": 1}')
        deadline = time.monotonic() + 5
        while not sink.got and time.monotonic() < deadline:
            time.sleep(0.01)
        calls = 0
        time.sleep(1.0)
        idle_rounds = calls
    assert not fwd.running
    assert [r.line for r in sink.got] == ['{"late": 1}']
    assert 2 <= idle_rounds <= 21, f"{idle_rounds} rounds in 1 s at a 50 ms interval"


def test_manager_sources_tail_every_instance_the_manager_knows(
    spool: ResultSpool, tmp_path: Path
) -> None:
    """Instances that ended still have their last results read; no VM is needed for that."""
    manager = InstanceManager(
        tmp_path / "instances",
        ImageStore(tmp_path / "store"),
        vmm.create("qemu"),
        UnpackedLayers(tmp_path / "unpacked"),
    )
    for name, state in (("one", InstanceState.RUNNING), ("two", InstanceState.EXITED)):
        instance = Instance(
            id=f"{name}-id",
            name=name,
            image="x:1",
            image_digest="sha256:" + "0" * 64,
            state=state,
            created_at=time.time(),
            memory_mib=64,
            vcpus=1,
            workdir=str(tmp_path / "instances" / f"{name}-id"),
        )
        manager.records.add(instance)
        write(manager.results_path(instance), json.dumps({"from": name}))
    sink = ListSink("s")
    fwd = ResultForwarder(spool, [sink], manager_sources(manager), "n")
    assert fwd.run_once().delivered == {"s": 2}
    assert sorted(r.line for r in sink.got) == ['{"from": "one"}', '{"from": "two"}']


# -- against a real broker -------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def subscriber(broker: MosquittoBroker) -> Iterator[Subscriber]:
    s = Subscriber(broker)
    yield s
    s.close()


def mqtt_sink(broker: MosquittoBroker) -> ResultSink:
    return create("mqtt", broker.url + "?timeout=3&reconnect_max=1")


def wait_for(seqs: set[int], subscriber: Subscriber, instance: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while {m["seq"] for m in subscriber.all_received(instance)} < seqs:
        assert time.monotonic() < deadline, (
            f"missing {sorted(seqs - {m['seq'] for m in subscriber.all_received(instance)})}"
        )
        time.sleep(0.05)


@pytest.mark.interop
@needs_mosquitto
def test_results_arrive_on_their_topics_in_order(
    spool: ResultSpool, tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    a, b = tmp_path / "a" / "results.jsonl", tmp_path / "b" / "results.jsonl"
    write(a, '{"t": 20.5}', "garbage", '{"t": 21}')
    write(b, '{"other": true}')
    with a.open("a") as f:
        f.write('{"t": 2')  # the app is still writing this one
    sink = mqtt_sink(broker)
    fwd = ResultForwarder(
        spool, [sink], lambda: sources_for(("inst-a", a), ("inst-b", b)), "edge-1"
    )
    try:
        with fwd:
            wait_for({1, 2, 3}, subscriber, "inst-a")
            wait_for({1}, subscriber, "inst-b")
            time.sleep(0.3)
            assert len(subscriber.all_received("inst-a")) == 3  # not the partial line
            with a.open("a") as f:
                f.write('2}\n{"t": 23}\n')
            wait_for({1, 2, 3, 4, 5}, subscriber, "inst-a")
    finally:
        sink.close()
    got = subscriber.all_received("inst-a")
    assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
    assert [m.get("result") for m in got] == [{"t": 20.5}, None, {"t": 21}, {"t": 22}, {"t": 23}]
    assert got[1]["raw"] == "garbage" and got[1]["error"].startswith("invalid JSON")
    assert {m["node"] for m in got} == {"edge-1"}
    assert subscriber.topics() == {
        "ukedge/edge-1/inst-a/results",
        "ukedge/edge-1/inst-b/results",
    }


@pytest.mark.interop
@needs_mosquitto
def test_results_wait_in_the_spool_while_the_broker_is_down(
    spool: ResultSpool, tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    f = tmp_path / "results.jsonl"
    sink = mqtt_sink(broker)
    fwd = ResultForwarder(spool, [sink], lambda: sources_for(("i", f)), "n", retry_min=0.1)
    try:
        write(f, '{"i": 0}')
        deadline = time.monotonic() + 30
        while fwd.run_once().delivered.get("mqtt") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        subscribed = subscriber.subscriptions
        broker.stop()
        write(f, *(json.dumps({"i": i}) for i in range(1, 200)))
        for _ in range(5):
            fwd.run_once()
            time.sleep(0.1)
        assert spool.last_seq("i") == 200
        assert len(spool.pending("mqtt", 1000)) >= 199, "nothing can have been confirmed"
        broker.start()
        subscriber.wait_ready(since=subscribed)
        deadline = time.monotonic() + 60
        while spool.pending("mqtt"):
            assert time.monotonic() < deadline, "the spool did not drain after the broker came back"
            fwd.run_once()
            time.sleep(0.05)
        wait_for(set(range(1, 201)), subscriber, "i")
    finally:
        sink.close()
    seqs = [m["seq"] for m in subscriber.all_received("i")]
    assert set(seqs) == set(range(1, 201))
    assert first_arrivals(seqs) == list(range(1, 201))
    assert all(m["result"] == {"i": m["seq"] - 1} for m in subscriber.all_received("i"))


@pytest.mark.interop
@needs_mosquitto
def test_a_restarted_forwarder_loses_nothing(
    tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    """Stop the forwarder, its sink and its spool mid-stream; new objects on the same file
    carry on: every line arrives, first arrivals in seq order, duplicates only at-least-once."""
    f = tmp_path / "results.jsonl"
    db = tmp_path / "spool.db"
    total = 600
    writer_done = threading.Event()

    def writer() -> None:
        for i in range(total):
            with f.open("a") as out:
                # Lines are written in two pieces, as a slow app would.
                line = json.dumps({"i": i})
                out.write(line[:4])
                out.flush()
                out.write(line[4:] + "\n")
            if i % 25 == 0:
                time.sleep(0.05)
        writer_done.set()

    def forwarder() -> tuple[ResultSpool, ResultSink, ResultForwarder]:
        spool = ResultSpool(db)
        sink = mqtt_sink(broker)
        fwd = ResultForwarder(spool, [sink], lambda: sources_for(("i", f)), "n", interval=0.05)
        fwd.start()
        return spool, sink, fwd

    thread = threading.Thread(target=writer)
    thread.start()
    for _ in range(3):  # two restarts while the app writes
        spool, sink, fwd = forwarder()
        time.sleep(0.4)
        fwd.stop()
        sink.close()
        spool.close()
    thread.join(60)
    assert writer_done.is_set()
    spool, sink, fwd = forwarder()
    try:
        wait_for(set(range(1, total + 1)), subscriber, "i", timeout=60)
    finally:
        fwd.stop()
        sink.close()
    assert spool.last_seq("i") == total
    got = subscriber.all_received("i")
    seqs = [m["seq"] for m in got]
    assert set(seqs) == set(range(1, total + 1))
    assert first_arrivals(seqs) == list(range(1, total + 1))
    assert all(m["result"] == {"i": m["seq"] - 1} for m in got)
    spool.close()


@pytest.mark.vm
@pytest.mark.interop
@needs_mosquitto
def test_a_real_apps_results_reach_the_broker(
    manager: InstanceManager, tmp_path: Path, broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    """hello-c in a QEMU VM writes its JSON line to /dev/ukedge-results; it arrives over MQTT."""
    spool = ResultSpool(tmp_path / "results-spool.db")
    sink = mqtt_sink(broker)
    fwd = ResultForwarder(spool, [sink], manager_sources(manager), "edge-vm")
    try:
        with fwd:
            instances = [
                manager.run(RunRequest(image="hello-c:1", args=[f"vm{i}"])) for i in range(2)
            ]
            for instance in instances:
                assert manager.wait(instance.id, timeout=120).state is InstanceState.EXITED
            for instance in instances:
                wait_for({1}, subscriber, instance.id, timeout=60)
    finally:
        sink.close()
        spool.close()
    for instance in instances:
        [line] = manager.results_path(instance).read_text().splitlines()
        [msg] = subscriber.all_received(instance.id)
        assert msg["result"] == json.loads(line)
        assert (msg["seq"], msg["node"], msg["instance"]) == (1, "edge-vm", instance.id)
    assert subscriber.topics() == {f"ukedge/edge-vm/{i.id}/results" for i in instances}
