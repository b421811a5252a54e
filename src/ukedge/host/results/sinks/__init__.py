"""Result sinks: where the host agent forwards what apps write to their results device.

The MQTT sink (paho) loads when a sink of its scheme is made or its names are used: the
controller link and the CLI's fleet commands share this package's contract without paying for
an MQTT client they never open.
"""

import typing

from ukedge._lazy import lazy_exports
from ukedge.host.results.sinks._factory import create, register, sink_schemes
from ukedge.host.results.sinks.base import (
    ResultRecord,
    ResultSink,
    SinkError,
    SinkUnavailable,
    check_batch,
)

register("mqtt", "ukedge.host.results.sinks.mqtt:MqttSink.from_config")

__all__ = [
    "MqttSink",
    "ResultRecord",
    "ResultSink",
    "SinkError",
    "SinkUnavailable",
    "check_batch",
    "create",
    "register",
    "sink_schemes",
    "topic_for",
]

if typing.TYPE_CHECKING:
    from ukedge.host.results.sinks.mqtt import MqttSink, topic_for

_LAZY = {
    "MqttSink": "ukedge.host.results.sinks.mqtt",
    "topic_for": "ukedge.host.results.sinks.mqtt",
}

__getattr__ = lazy_exports(globals(), _LAZY)
