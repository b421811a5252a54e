"""The controller's own metrics beside the server kit's request metrics: the fleet by state and
whether this process leads. Read from the database at scrape time (a few grouped counts), so
every controller process reports the same fleet whichever one is scraped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import func, select

from ukedge.controller._controller import Controller
from ukedge.controller._db import deployments, nodes, replicas
from ukedge.controller._fleet import ReplicaState
from ukedge.controller._models import NodeStatus

__all__ = ["FleetMetrics"]


class FleetMetrics:
    def __init__(self, controller: Controller, registry: CollectorRegistry) -> None:
        self.controller = controller
        self.nodes = Gauge(
            "ukedge_controller_nodes", "Enrolled nodes by status.", ["status"], registry=registry
        )
        self.replicas = Gauge(
            "ukedge_controller_replicas", "Replicas by state.", ["state"], registry=registry
        )
        self.deployments = Gauge("ukedge_controller_deployments", "Deployments.", registry=registry)
        self.leader = Gauge(
            "ukedge_controller_leader",
            "1 when this process is the scheduling leader.",
            registry=registry,
        )
        self.passes = Gauge(
            "ukedge_controller_reconcile_passes",
            "Reconcile passes this process made as leader since it started.",
            registry=registry,
        )

    def refresh(self) -> None:
        with self.controller.db.read() as connection:
            by_ready: dict[bool, int] = dict(
                connection.execute(
                    select(nodes.c.ready, func.count()).group_by(nodes.c.ready)
                ).all()
            )
            by_state: dict[str, int] = dict(
                connection.execute(
                    select(replicas.c.state, func.count()).group_by(replicas.c.state)
                ).all()
            )
            count = connection.execute(select(func.count()).select_from(deployments)).scalar_one()
        self.nodes.labels(NodeStatus.READY.value).set(by_ready.get(True, 0))
        self.nodes.labels(NodeStatus.NOT_READY.value).set(by_ready.get(False, 0))
        for state in ReplicaState:
            self.replicas.labels(state.value).set(by_state.get(state.value, 0))
        self.deployments.set(count)
        loop = self.controller.loop
        self.leader.set(1 if loop is not None and loop.leadership.leading else 0)
        self.passes.set(loop.passes if loop is not None else 0)
