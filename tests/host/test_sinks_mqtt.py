"""The MQTT sink against a real Mosquitto broker (started here, by :mod:`kit.mqtt`) and the sink
conformance suite."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.sinks import ResultSinkSuite, make_records
from kit.mqtt import MOSQUITTO, MosquittoBroker, Subscriber, needs_mosquitto
from ukedge.errors import UsageError
from ukedge.host.results.sinks import (
    MqttSink,
    ResultRecord,
    ResultSink,
    SinkUnavailable,
    create,
    topic_for,
)


class BrokerPeer:
    """The conformance suite's :class:`~conformance.sinks.SinkPeer`: broker plus subscriber."""

    def __init__(self, broker: MosquittoBroker, subscriber: Subscriber) -> None:
        self.broker = broker
        self.subscriber = subscriber
        self._subscriptions = 0

    def received(self, instance_id: str, count: int, timeout: float) -> list[dict[str, Any]]:
        return self.subscriber.received(instance_id, count, timeout)

    def all_received(self, instance_id: str) -> list[dict[str, Any]]:
        return self.subscriber.all_received(instance_id)

    def stop(self) -> None:
        self._subscriptions = self.subscriber.subscriptions
        self.broker.stop()

    def start(self) -> None:
        self.broker.start()
        self.subscriber.wait_ready(since=self._subscriptions)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if MOSQUITTO is None:
        pytest.skip("needs Debian's mosquitto (apt-get install mosquitto; make deps)")
    b = MosquittoBroker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def subscriber(broker: MosquittoBroker) -> Iterator[Subscriber]:
    s = Subscriber(broker)
    yield s
    s.close()


@pytest.fixture
def peer(broker: MosquittoBroker, subscriber: Subscriber) -> BrokerPeer:
    return BrokerPeer(broker, subscriber)


@pytest.fixture
def sink(broker: MosquittoBroker) -> Iterator[ResultSink]:
    s = create("mqtt-test", broker.url + "?timeout=3&reconnect_max=1")
    yield s
    s.close()


@pytest.mark.interop
@needs_mosquitto
class TestMqttSinkConformance(ResultSinkSuite):
    """Every check of tests/conformance/sinks.py against the MQTT sink and real Mosquitto."""


@pytest.mark.interop
@needs_mosquitto
def test_topic_and_payload_bytes(sink: ResultSink, subscriber: Subscriber) -> None:
    """The app's line is carried verbatim inside the envelope (numbers keep their spelling)."""
    line = '{"v": 1.10, "big": 12345678901234567890}'

    assert sink.deliver([ResultRecord("abc", "edge-1", 1, 2.5, line)]) == 1
    subscriber.received("abc", 1, 10)
    assert subscriber.topics() == {"ukedge/edge-1/abc/results"}
    assert subscriber.payloads("abc") == [
        b'{"instance":"abc","node":"edge-1","seq":1,"ts":2.5,"result":' + line.encode() + b"}"
    ]


@pytest.mark.interop
@needs_mosquitto
def test_a_sink_created_while_the_broker_is_down_connects_later(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path)
    s = create("late", broker.url + "?timeout=1&reconnect_max=1")
    try:
        with pytest.raises(SinkUnavailable):
            s.deliver(make_records("i9", 1, 1))
        broker.start()
        sub = Subscriber(broker)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert s.deliver(make_records("i9", 1, 3)) == 3
                    break
                except SinkUnavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert [m["seq"] for m in sub.received("i9", 3, 10)] == [1, 2, 3]
        finally:
            sub.close()
    finally:
        s.close()
        broker.stop()


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://",
        "mqtt://broker:notaport",
        "mqtt://broker:1883/some/topic",
        "mqtt://broker?qos=2",
        "mqtt://broker?timeout=-1",
        "mqtts://broker:8883",
        "kafka://broker:9092",
    ],
)
def test_bad_urls_name_the_problem(url: str) -> None:
    with pytest.raises(UsageError, match="URL"):
        create("bad", url)


def test_url_options_and_credentials() -> None:
    s = MqttSink.from_url("x", "mqtt://user:p%40ss@127.0.0.1:1?timeout=0.5&reconnect_max=2")
    try:
        assert (s.host, s.port, s.timeout) == ("127.0.0.1", 1, 0.5)
        with pytest.raises(SinkUnavailable, match=r"127\.0\.0\.1:1"):
            s.deliver(make_records("j1", 1, 1))
    finally:
        s.close()


def test_a_sink_needs_a_name() -> None:
    with pytest.raises(UsageError, match="name"):
        create(" ", "mqtt://127.0.0.1:1")


@pytest.mark.parametrize("node", ["a/b", "a+b", "#", ""])
def test_topic_levels_cannot_be_wildcards_or_separators(node: str) -> None:
    with pytest.raises(UsageError, match="MQTT topic level"):
        topic_for(node, "abc")
    assert topic_for("edge-1", "abc") == "ukedge/edge-1/abc/results"
