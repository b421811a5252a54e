"""The cloud centre: nodes, deployments, the scheduler (pure), the reconciler, results.

The server (FastAPI, SQLAlchemy, the TLS identity) and the REST client (httpx) load on first
use: a command that only reads a deployment file pays for neither.
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
    MoveRecord,
    MoveRequest,
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
from ukedge.controller._planner import Plan, plan
from ukedge.controller._scheduler import per_node_targets, schedule
from ukedge.controller._service import FleetService
from ukedge.controller._settings import (
    DEFAULT_ADDR,
    ENV_PREFIX,
    ControllerSettings,
    load_controller_settings,
)

__all__ = [
    "CLIENT_ENV",
    "DEFAULT_ADDR",
    "ENV_PREFIX",
    "Controller",
    "ControllerClient",
    "ControllerConfig",
    "ControllerSettings",
    "Deployment",
    "DeploymentSpec",
    "DeploymentView",
    "FleetService",
    "Identity",
    "MoveRecord",
    "MoveRequest",
    "NodeRecord",
    "NodeStatus",
    "NodeView",
    "Placement",
    "PlacementSpec",
    "Plan",
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
    "UpInfo",
    "UpSettings",
    "create_controller_app",
    "deployment_spec",
    "load_controller_settings",
    "load_deployment_file",
    "per_node_targets",
    "plan",
    "schedule",
    "serve",
    "up",
]

if typing.TYPE_CHECKING:
    from ukedge.controller._api import create_controller_app
    from ukedge.controller._client import CLIENT_ENV, ControllerClient, ControllerConfig
    from ukedge.controller._controller import Controller
    from ukedge.controller._identity import Identity
    from ukedge.controller._serve import serve
    from ukedge.controller._up import UpInfo, UpSettings, up

_LAZY = {
    "CLIENT_ENV": "ukedge.controller._client",
    "ControllerClient": "ukedge.controller._client",
    "ControllerConfig": "ukedge.controller._client",
    "create_controller_app": "ukedge.controller._api",
    "Controller": "ukedge.controller._controller",
    "Identity": "ukedge.controller._identity",
    "serve": "ukedge.controller._serve",
    "UpInfo": "ukedge.controller._up",
    "UpSettings": "ukedge.controller._up",
    "up": "ukedge.controller._up",
}

__getattr__ = lazy_exports(globals(), _LAZY)
