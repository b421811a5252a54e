"""The controller link: how a host agent enrols with the controller, reports by heartbeat and
runs the desired state the answers carry (the wire models here; the agent's loop beside them)."""

from ukedge.host.link._token import (
    JoinToken,
    certificate_fingerprint,
    fetch_certificate,
    pinned_context,
)
from ukedge.host.link._wire import (
    ENROL_PATH,
    HEARTBEAT_PATH,
    RESULTS_PATH,
    DesiredInstance,
    DesiredState,
    EnrolReply,
    EnrolRequest,
    Heartbeat,
    HeartbeatReply,
    InstanceReport,
    NodeResources,
    ResultBatch,
    ResultEntry,
)

__all__ = [
    "ENROL_PATH",
    "HEARTBEAT_PATH",
    "RESULTS_PATH",
    "DesiredInstance",
    "DesiredState",
    "EnrolReply",
    "EnrolRequest",
    "Heartbeat",
    "HeartbeatReply",
    "InstanceReport",
    "JoinToken",
    "NodeResources",
    "ResultBatch",
    "ResultEntry",
    "certificate_fingerprint",
    "fetch_certificate",
    "pinned_context",
]
