"""The controller link: how a host agent enrols with the controller, reports by heartbeat and
runs the desired state the answers carry, and delivers its results there."""

from ukedge.host.link._apply import Applier, ApplyResult
from ukedge.host.link._client import LinkClient
from ukedge.host.link._desired import DesiredStore
from ukedge.host.link._enrolment import Enrolment, ensure_enrolment, load_enrolment
from ukedge.host.link._hollow import HOLLOW_ACCELERATOR, HollowFleet, HollowNode
from ukedge.host.link._link import ControllerLink
from ukedge.host.link._movebook import MoveBook, MoveDriver, MoveProgress
from ukedge.host.link._reconcile import (
    DEPLOYMENT_LABEL,
    REPLICA_LABEL,
    REVISION_LABEL,
    Marks,
    ReconcilePlan,
    marks_of,
    plan_reconcile,
    request_for,
)
from ukedge.host.link._report import build_heartbeat, instance_report
from ukedge.host.link._sink import CONTROLLER_SINK, ControllerSink
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
    MoveMode,
    MoveOffer,
    MoveOrder,
    MoveReport,
    NodeResources,
    ResultBatch,
    ResultEntry,
)

__all__ = [
    "CONTROLLER_SINK",
    "DEPLOYMENT_LABEL",
    "ENROL_PATH",
    "HEARTBEAT_PATH",
    "HOLLOW_ACCELERATOR",
    "REPLICA_LABEL",
    "RESULTS_PATH",
    "REVISION_LABEL",
    "Applier",
    "ApplyResult",
    "ControllerLink",
    "ControllerSink",
    "DesiredInstance",
    "DesiredState",
    "DesiredStore",
    "EnrolReply",
    "EnrolRequest",
    "Enrolment",
    "Heartbeat",
    "HeartbeatReply",
    "HollowFleet",
    "HollowNode",
    "InstanceReport",
    "JoinToken",
    "LinkClient",
    "Marks",
    "MoveBook",
    "MoveDriver",
    "MoveMode",
    "MoveOffer",
    "MoveOrder",
    "MoveProgress",
    "MoveReport",
    "NodeResources",
    "ReconcilePlan",
    "ResultBatch",
    "ResultEntry",
    "build_heartbeat",
    "certificate_fingerprint",
    "ensure_enrolment",
    "fetch_certificate",
    "instance_report",
    "load_enrolment",
    "marks_of",
    "pinned_context",
    "plan_reconcile",
    "request_for",
]
