"""The cloud centre: nodes, deployments, the scheduler (pure), the reconciler, results."""

from ukedge.controller._fleet import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    Resources,
    ScoringStrategy,
)

__all__ = [
    "DeploymentView",
    "NodeView",
    "ReplicaState",
    "ReplicaView",
    "Resources",
    "ScoringStrategy",
]
