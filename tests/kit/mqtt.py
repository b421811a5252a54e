"""A private Mosquitto broker and a subscriber that records what arrives, for the MQTT sink,
forwarder and agent tests; ``needs_mosquitto`` skips a test, naming the package, where the
broker is not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kit.net import free_port

__all__ = ["MOSQUITTO", "MosquittoBroker", "Subscriber", "needs_mosquitto"]

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
        #: Subscriptions the broker acknowledged so far: one per (re)connection.
        self.subscriptions = 0
        self._subscribed = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        self.wait_ready()

    def _on_connect(self, client: paho.Client, *_args: object) -> None:
        client.subscribe("ukedge/#", qos=1)

    def _on_subscribe(self, *_args: object) -> None:
        with self._subscribed:
            self.subscriptions += 1
            self._subscribed.notify_all()

    def _on_message(self, _client: object, _userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def wait_ready(self, timeout: float = 20.0, *, since: int = 0) -> None:
        """Until the broker acknowledged a subscription after the ``since``-th: after a broker
        restart pass the count read before it stopped (a flag cleared on disconnect could
        still be set when paho had not yet seen the old connection go)."""
        with self._subscribed:
            subscribed = self._subscribed.wait_for(lambda: self.subscriptions > since, timeout)
        assert subscribed, "test subscriber could not subscribe to the broker"

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
