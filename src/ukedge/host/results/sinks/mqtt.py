"""Results to an MQTT broker (Mosquitto, or any MQTT 3.1.1 broker) with paho-mqtt.

URL: ``mqtt://[USER[:PASSWORD]@]HOST[:PORT][?timeout=S&reconnect_max=S&client_id=ID]``.
Each record goes to ``ukedge/<node>/<instance id>/results`` at QoS 1 with the payload
:meth:`ResultRecord.envelope` (UTF-8 JSON). A record counts as delivered only when the broker's
PUBACK for it arrived; records published but not confirmed before a disconnect are sent again
(at least once). paho's network thread keeps the connection and reconnects with back-off
(1 s doubling up to ``reconnect_max``); ``deliver`` never waits for a connection longer than
``timeout``, it reports :class:`SinkUnavailable` and the forwarder retries later.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ukedge.errors import UsageError
from ukedge.host.results.sinks.base import ResultRecord, SinkError, SinkUnavailable, check_batch

__all__ = ["MqttSink", "topic_for"]

log = logging.getLogger(__name__)

_DEFAULT_PORT = 1883
_TOPIC_PART = re.compile(r"^[^/+#\x00]+\Z")


def topic_for(node: str, instance_id: str) -> str:
    """``ukedge/<node>/<instance>/results``; refuses parts that would change the topic's shape."""
    for label, part in (("node", node), ("instance", instance_id)):
        if not _TOPIC_PART.match(part):
            raise UsageError(
                f"{label} {part!r} cannot be an MQTT topic level (no '/', '+', '#' or NUL)"
            )
    return f"ukedge/{node}/{instance_id}/results"


class MqttSink:
    """A :class:`~ukedge.host.results.sinks.ResultSink` publishing to one MQTT broker at QoS 1."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int = _DEFAULT_PORT,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        timeout: float = 10.0,
        reconnect_max: int = 30,
        keepalive: int = 30,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.timeout = timeout
        self._closed = False
        self._connected = threading.Event()
        self._ever_connected = False
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=max(1, reconnect_max))
        # Batches are bounded by the forwarder; let a whole one be in flight at once.
        self._client.max_inflight_messages_set(1000)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.connect_async(host, port, keepalive=keepalive)
        self._client.loop_start()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MqttSink:
        """The sink ``config["name"]`` for ``config["url"]`` (``sinks.create``'s factory)."""
        return cls.from_url(str(config["name"]), str(config["url"]))

    @classmethod
    def from_url(cls, name: str, url: str) -> MqttSink:
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise UsageError(f"invalid MQTT sink URL {url!r}: expected mqtt://HOST[:PORT]")
        if parts.path not in ("", "/"):
            raise UsageError(
                f"invalid MQTT sink URL {url!r}: no path allowed, the topic is "
                "ukedge/<node>/<instance>/results"
            )
        try:
            port = parts.port or _DEFAULT_PORT
        except ValueError as exc:
            raise UsageError(f"invalid MQTT sink URL {url!r}: {exc}") from exc
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = set(query) - {"timeout", "reconnect_max", "client_id", "keepalive"}
        if unknown:
            raise UsageError(
                f"invalid MQTT sink URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                "known: client_id, keepalive, reconnect_max, timeout"
            )
        try:
            timeout = float(query.get("timeout", "10"))
            reconnect_max = int(query.get("reconnect_max", "30"))
            keepalive = int(query.get("keepalive", "30"))
        except ValueError as exc:
            raise UsageError(f"invalid MQTT sink URL {url!r}: {exc}") from exc
        if timeout <= 0 or reconnect_max < 1 or keepalive < 5:
            raise UsageError(
                f"invalid MQTT sink URL {url!r}: need timeout > 0, reconnect_max >= 1, "
                "keepalive >= 5"
            )
        return cls(
            name,
            parts.hostname,
            port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            client_id=query.get("client_id", ""),
            timeout=timeout,
            reconnect_max=reconnect_max,
            keepalive=keepalive,
        )

    # -- paho callbacks (its network thread) -------------------------------------------------------

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: object,
        _flags: object,
        reason: object,
        _properties: object,
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning(
                "MQTT broker %s:%s refused the connection: %s", self.host, self.port, reason
            )
            return
        log.info("connected to MQTT broker %s:%s", self.host, self.port)
        self._ever_connected = True
        self._connected.set()

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: object,
        _flags: object,
        reason: object,
        _properties: object,
    ) -> None:
        if self._connected.is_set() and not self._closed:
            log.warning("lost MQTT broker %s:%s: %s", self.host, self.port, reason)
        self._connected.clear()

    # -- the contract ------------------------------------------------------------------------------

    def deliver(self, batch: Sequence[ResultRecord]) -> int:
        if self._closed:
            raise SinkError(self.name, "deliver() after close()")
        check_batch(self.name, batch)
        deadline = time.monotonic() + self.timeout
        # Right after start the first connection may still be on its way; later, a missing one
        # is reported at once so that a dead broker does not slow the forwarder's other work.
        first_wait = 0.0 if self._ever_connected else min(self.timeout, 1.0)
        if not self._connected.wait(first_wait) or not self._client.is_connected():
            raise SinkUnavailable(
                self.name, f"not connected to MQTT broker {self.host}:{self.port}"
            )
        topic = topic_for(batch[0].node, batch[0].instance_id)
        sent: list[tuple[int, paho.MQTTMessageInfo]] = []
        for record in batch:
            info = self._client.publish(topic, record.envelope().encode(), qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                break  # the connection dropped: confirm what we can of the rest
            sent.append((record.seq, info))
        confirmed: int | None = None
        for seq, info in sent:
            while not info.is_published():
                if time.monotonic() >= deadline or not self._client.is_connected():
                    break
                info.wait_for_publish(0.05)
            if not info.is_published():
                break
            confirmed = seq
        if confirmed is None:
            raise SinkUnavailable(
                self.name,
                f"MQTT broker {self.host}:{self.port} confirmed none of {len(batch)} record(s) "
                f"within {self.timeout:g} s",
            )
        return confirmed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.disconnect()
        self._client.loop_stop()
        # paho 2.2 closes its broker socket (left open when the thread stopped between reconnect
        # attempts) and its wake-up socket pair only when the client is garbage-collected.
        self._client._reset_sockets()

    def __repr__(self) -> str:
        return f"MqttSink(name={self.name!r}, broker={self.host}:{self.port})"
