"""The MQTT sink against a real Mosquitto broker (started here) and the sink conformance suite.

Also home of :class:`MosquittoBroker` and :class:`Subscriber`, which the forwarder tests reuse.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conformance.sinks import ResultSinkSuite, make_records
from kit.net import free_port
from ukedge.errors import UsageError
from ukedge.host.sinks import MqttSink, ResultRecord, ResultSink, SinkUnavailable, create, topic_for

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="needs Debian's mosquitto (apt-get install mosquitto; make deps)"
)


class MosquittoBroker:
    """A private broker on 127.0.0.1:``port`` that tests can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert MOSQUITTO is not None
        assert self._proc is None
        log = (self.workdir / "mosquitto.log").open("ab")
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stderr=log, stdout=log)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    "mosquitto exited: " + (self.workdir / "mosquitto.log").read_text()
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Subscriber:
    """A paho client on ``ukedge/#`` (QoS 1) recording every envelope by topic's instance."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        self.wait_ready()

    def _on_connect(self, client: paho.Client, *_args: object) -> None:
        client.subscribe("ukedge/#", qos=1)

    def _on_subscribe(self, *_args: object) -> None:
        self.ready.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.ready.clear()

    def _on_message(self, _client: object, _userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.ready.wait(timeout), "test subscriber could not subscribe to the broker"

    def all_received(self, instance_id: str) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.payloads(instance_id)]

    def payloads(self, instance_id: str) -> list[bytes]:
        with self._lock:
            return [m for topic, m in self.messages if topic.split("/")[2] == instance_id]

    def received(self, instance_id: str, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.all_received(instance_id)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{len(got)} of {count} results for {instance_id} arrived in {timeout} s"
                )
            time.sleep(0.02)

    def topics(self) -> set[str]:
        with self._lock:
            return {topic for topic, _ in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho 2.2 closes its sockets only when the client is garbage-collected.
        self.client._reset_sockets()


class BrokerPeer:
    """The conformance suite's :class:`~conformance.sinks.SinkPeer`: broker plus subscriber."""

    def __init__(self, broker: MosquittoBroker, subscriber: Subscriber) -> None:
        self.broker = broker
        self.subscriber = subscriber

    def received(self, instance_id: str, count: int, timeout: float) -> list[dict[str, Any]]:
        return self.subscriber.received(instance_id, count, timeout)

    def all_received(self, instance_id: str) -> list[dict[str, Any]]:
        return self.subscriber.all_received(instance_id)

    def stop(self) -> None:
        self.broker.stop()

    def start(self) -> None:
        self.broker.start()
        self.subscriber.wait_ready()


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
