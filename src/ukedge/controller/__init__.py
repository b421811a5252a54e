"""The cloud centre: nodes, deployments, the scheduler (pure), the reconciler, results."""

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

__all__ = [
    "Deployment",
    "DeploymentSpec",
    "DeploymentView",
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
    "per_node_targets",
    "plan",
    "schedule",
]
