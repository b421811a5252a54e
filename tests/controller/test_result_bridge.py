"""The controller's MQTT bridge against a real Mosquitto: every stored result republished on the
agents' topics, at least once, resumed after a broker outage and by the next leader."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.mqtt import MosquittoBroker, Subscriber, needs_mosquitto
from ukedge.controller import Controller, ControllerSettings
from ukedge.controller._results import store_batch
from ukedge.host.link import ResultBatch, ResultEntry

pytestmark = needs_mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    (tmp_path / "mqtt").mkdir()
    running = MosquittoBroker(tmp_path / "mqtt")
    running.start()
    yield running
    running.stop()


def _store(controller: Controller, instance: str, seqs: range) -> None:
    records = [ResultEntry(seq=n, ts=float(n), line=json.dumps({"n": n})) for n in seqs]
    batch = ResultBatch(instance=instance, deployment="web", records=records)
    store_batch(controller.db, "node1", batch, now=time.time())


def _bridge_until(controller: Controller, count: int, ceiling: float = 60.0) -> None:
    """Passes until ``count`` records are confirmed (the MQTT connection comes up in the
    background, so the first passes may find the broker not yet connected)."""
    assert controller.bridge is not None
    confirmed = 0
    deadline = time.monotonic() + ceiling
    while confirmed < count:
        assert time.monotonic() < deadline, f"{confirmed} of {count} records confirmed"
        confirmed += controller.bridge.run_once()
        time.sleep(0.05)
    assert confirmed == count


def test_stored_results_reach_the_broker_once_and_resume_after_an_outage(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    settings = ControllerSettings(data_dir=tmp_path / "controller", mqtt=[broker.url])
    controller = Controller(settings)
    subscriber = Subscriber(broker)
    try:
        _store(controller, "i1", range(1, 4))
        _store(controller, "i2", range(1, 3))
        _bridge_until(controller, 5)
        first = subscriber.received("i1", 3, timeout=30)
        assert [m["result"]["n"] for m in first] == [1, 2, 3]
        assert first[0]["node"] == "node1" and first[0]["seq"] == 1
        assert len(subscriber.received("i2", 2, timeout=30)) == 2
        assert "ukedge/node1/i1/results" in subscriber.topics()
        assert controller.bridge is not None and controller.bridge.run_once() == 0

        subscribed = subscriber.subscriptions
        broker.stop()
        _store(controller, "i1", range(4, 6))
        assert controller.bridge.run_once() == 0, "the broker is down: nothing confirmed"
        assert controller.bridge.backlog() == {broker.url: 2}
        broker.start()
        subscriber.wait_ready(timeout=60, since=subscribed)
        _bridge_until(controller, 2)
        assert [m["result"]["n"] for m in subscriber.received("i1", 5, timeout=30)][-2:] == [4, 5]
    finally:
        subscriber.close()
        controller.close()
    # The next leader continues from the cursor in the database: nothing is sent twice.
    again = Controller(settings)
    try:
        assert again.bridge is not None
        assert again.bridge.backlog() == {broker.url: 0}
    finally:
        again.close()


def test_no_broker_named_means_no_bridge(tmp_path: Path) -> None:
    controller = Controller(ControllerSettings(data_dir=tmp_path / "controller"))
    try:
        assert controller.bridge is None
    finally:
        controller.close()
