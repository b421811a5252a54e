"""The cloud centre: nodes, deployments, the scheduler (pure), the reconciler, results.

The REST client (httpx) loads on first use, so a command that only reads a deployment file does
not pay for it.
"""

import typing

from ukedge._lazy import lazy_exports
from ukedge.controller._deployfile import deployment_spec, load_deployment_file
from ukedge.controller._fleet import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    Resources,
    ScoringStrategy,
)
from ukedge.controller._models import (
    Deployment,
    DeploymentSpec,
    NodeRecord,
    NodeStatus,
    Placement,
    PlacementSpec,
    ReplicaRecord,
    ResultRecordOut,
    Revision,
    RolloutStatus,
    RolloutStrategy,
    TokenCreated,
    TokenInfo,
)
from ukedge.controller._service import FleetService

__all__ = [
    "CLIENT_ENV",
    "ControllerClient",
    "ControllerConfig",
    "Deployment",
    "DeploymentSpec",
    "DeploymentView",
    "FleetService",
    "NodeRecord",
    "NodeStatus",
    "NodeView",
    "Placement",
    "PlacementSpec",
    "ReplicaRecord",
    "ReplicaState",
    "ReplicaView",
    "Resources",
    "ResultRecordOut",
    "Revision",
    "RolloutStatus",
    "RolloutStrategy",
    "ScoringStrategy",
    "TokenCreated",
    "TokenInfo",
    "deployment_spec",
    "load_deployment_file",
]

if typing.TYPE_CHECKING:
    from ukedge.controller._client import CLIENT_ENV, ControllerClient, ControllerConfig

_LAZY = {
    "CLIENT_ENV": "ukedge.controller._client",
    "ControllerClient": "ukedge.controller._client",
    "ControllerConfig": "ukedge.controller._client",
}

__getattr__ = lazy_exports(globals(), _LAZY)
