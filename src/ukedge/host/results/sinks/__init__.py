"""Result sinks: where the host agent forwards what apps write to their results device."""

from ukedge.host.results.sinks._factory import create, register, sink_schemes
from ukedge.host.results.sinks.base import (
    ResultRecord,
    ResultSink,
    SinkError,
    SinkUnavailable,
    check_batch,
)
from ukedge.host.results.sinks.mqtt import MqttSink, topic_for

register("mqtt", MqttSink.from_config)

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
