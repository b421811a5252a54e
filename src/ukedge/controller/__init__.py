"""The cloud centre: nodes, deployments, the scheduler (pure), the reconciler, results.

The server (FastAPI, SQLAlchemy, the TLS identity) loads on first use: the CLI's client and
the models do not pay for it.
"""

import typing

from ukedge._lazy import lazy_exports
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
from ukedge.controller._planner import Plan, plan
from ukedge.controller._scheduler import per_node_targets, schedule
from ukedge.controller._settings import (
    DEFAULT_ADDR,
    ENV_PREFIX,
    ControllerSettings,
    load_controller_settings,
)

__all__ = [
    "DEFAULT_ADDR",
    "ENV_PREFIX",
    "Controller",
    "ControllerSettings",
    "Deployment",
    "DeploymentSpec",
    "DeploymentView",
    "Identity",
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
    "create_controller_app",
    "load_controller_settings",
    "per_node_targets",
    "plan",
    "schedule",
    "serve",
]

if typing.TYPE_CHECKING:
    from ukedge.controller._api import create_controller_app
    from ukedge.controller._controller import Controller
    from ukedge.controller._identity import Identity
    from ukedge.controller._serve import serve

_LAZY = {
    "create_controller_app": "ukedge.controller._api",
    "Controller": "ukedge.controller._controller",
    "Identity": "ukedge.controller._identity",
    "serve": "ukedge.controller._serve",
}

__getattr__ = lazy_exports(globals(), _LAZY)
