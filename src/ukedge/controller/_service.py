"""The fleet's operations behind one interface, as :class:`~ukedge.host.NodeService` is for one
node: the CLI's fleet commands talk to a :class:`FleetService` and render what it returns.

Today its one implementation is :class:`~ukedge.controller.ControllerClient` (the REST API over
pinned HTTPS); a process that holds the controller itself (``ukedge up``) can hand the same
commands an in-process one, and they print the same output.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator, Mapping
from typing import Protocol

from ukedge.controller._models import (
    Deployment,
    DeploymentSpec,
    MoveRecord,
    NodeRecord,
    ReplicaRecord,
    ResultRecordOut,
    Revision,
    TokenCreated,
    TokenInfo,
)

__all__ = ["FleetService"]


class FleetService(Protocol):
    """Nodes, join tokens, deployments, replicas and results of one controller. Nodes are named
    by id or name; refusals are :class:`~ukedge.errors.ControllerError` with what to do."""

    @property
    def url(self) -> str:
        """Where nodes reach this controller (``https://HOST:PORT``)."""

    # -- join tokens -----------------------------------------------------------------------------

    def create_token(
        self, description: str = "", *, ttl_s: float | None = None, uses: int | None = None
    ) -> TokenCreated:
        """A join token; its secret is in the answer and nowhere else afterwards."""

    def tokens(self) -> builtins.list[TokenInfo]: ...

    def delete_token(self, token_id: str) -> None:
        """No more nodes enrol with it; those enrolled stay."""

    # -- nodes -----------------------------------------------------------------------------------

    def nodes(self) -> builtins.list[NodeRecord]: ...

    def node(self, key: str) -> NodeRecord: ...

    def label_node(
        self,
        key: str,
        set_labels: Mapping[str, str] | None = None,
        remove: builtins.list[str] | None = None,
    ) -> NodeRecord: ...

    def cordon(self, key: str) -> NodeRecord:
        """No new replicas go to the node; those it runs stay."""

    def uncordon(self, key: str) -> NodeRecord:
        """The node takes new replicas again (a drain ends too)."""

    def drain(self, key: str, *, migrate: str | None = None, postcopy: bool = False) -> NodeRecord:
        """Cordon the node and move its replicas elsewhere, make-before-break; with
        ``migrate`` (snapshot or live), moved with their memory; ``postcopy`` (live): each
        move switches to post-copy after QEMU's first pass."""

    # -- moves -----------------------------------------------------------------------------------

    def move(
        self, instance: str, to: str, *, mode: str = "snapshot", postcopy: bool = False
    ) -> MoveRecord:
        """Start moving a replica's instance to node ``to`` with its memory (``postcopy``:
        a live move that switches to post-copy after QEMU's first pass)."""

    def get_move(self, move_id: str) -> MoveRecord: ...

    def cancel_move(self, move_id: str) -> MoveRecord: ...

    def moves(self, *, active: bool = False) -> builtins.list[MoveRecord]:
        """The moves tried, newest first."""

    def remove_node(self, key: str) -> NodeRecord:
        """Forget the node (its credential stops working); returns its last record."""

    # -- deployments -----------------------------------------------------------------------------

    def deploy(self, spec: DeploymentSpec) -> Deployment:
        """Create the deployment or, when the spec changed, make and roll out a new revision."""

    def deployments(self) -> builtins.list[Deployment]: ...

    def deployment(self, name: str) -> Deployment: ...

    def delete_deployment(self, name: str) -> None:
        """Its replicas stop on every node."""

    def scale(self, name: str, replicas: int) -> Deployment: ...

    def revisions(self, name: str) -> builtins.list[Revision]: ...

    def rollback(self, name: str, revision: int | None = None) -> Deployment:
        """Roll out an earlier revision (the previous one by default)."""

    def watch_rollout(
        self, name: str, revision: int, *, interval: float = 1.0
    ) -> Iterator[Deployment]:
        """The deployment each time its rollout changes, until the rollout of ``revision`` (or
        the one it rolled back to) has settled; the last one yielded is the outcome."""

    # -- replicas and results --------------------------------------------------------------------

    def replicas(
        self, *, deployment: str | None = None, node: str | None = None
    ) -> builtins.list[ReplicaRecord]: ...

    def results(
        self,
        *,
        deployment: str | None = None,
        node: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_id: int | None = None,
        limit: int = 1000,
    ) -> Iterator[ResultRecordOut]:
        """Stored results matching the filters, in id order."""

    def stream_results(
        self,
        *,
        deployment: str | None = None,
        node: str | None = None,
        since: float | None = None,
        after_id: int | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[ResultRecordOut]:
        """Results as they are stored, after ``after_id``; none lost or repeated across a
        controller restart."""
