"""What the node must do to run its desired state: the pure decision, no VM, no I/O.

The controller's instances on a node are those labelled ``ukedge.deployment``; each carries its
replica and revision in ``ukedge.replica`` and ``ukedge.revision``. Everything else (instances
started by hand, another tool's) is invisible here and never touched. For each (deployment,
replica) the desired state names:

* none on the node: **create** it;
* one with the same revision: **keep** it, whatever its state. A running instance is never
  restarted, so a node that comes back to its controller does not bounce its apps; an ended one
  is the node's restart policy's business, not the controller's;
* one with another revision: **replace** it (stop, remove, create the new revision);
* instances the desired state no longer names (and duplicates of one replica beyond the one
  kept): **remove** them.

Replicas ``held`` (moves of the controller's under way through this node, see
:mod:`ukedge.host.link._movebook`) are left as they are: neither created, replaced nor removed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ukedge.host._models import Instance, RunRequest
from ukedge.host.link._wire import DesiredInstance

__all__ = [
    "DEPLOYMENT_LABEL",
    "REPLICA_LABEL",
    "REVISION_LABEL",
    "Marks",
    "ReconcilePlan",
    "marks_of",
    "plan_reconcile",
    "request_for",
]

DEPLOYMENT_LABEL = "ukedge.deployment"
REPLICA_LABEL = "ukedge.replica"
REVISION_LABEL = "ukedge.revision"


@dataclass(frozen=True)
class Marks:
    """The controller's labels of one instance, read back."""

    deployment: str
    replica: str | None
    revision: int | None


def marks_of(labels: Mapping[str, str]) -> Marks | None:
    """The controller's marks, None for an instance the controller did not start."""
    deployment = labels.get(DEPLOYMENT_LABEL)
    if deployment is None:
        return None
    try:
        revision: int | None = int(labels.get(REVISION_LABEL, ""))
    except ValueError:
        revision = None
    return Marks(deployment, labels.get(REPLICA_LABEL), revision)


def request_for(desired: DesiredInstance) -> RunRequest:
    """The run request of a desired instance: its name and the controller's marks set (over any
    the request itself carries). Never ``auto_remove``: a controller's instance goes when the
    controller says so; one that removed itself would be made again at once."""
    labels = {
        **desired.request.labels,
        DEPLOYMENT_LABEL: desired.deployment,
        REPLICA_LABEL: desired.replica,
        REVISION_LABEL: str(desired.revision),
    }
    return desired.request.model_copy(
        update={"name": desired.name, "labels": labels, "auto_remove": False}
    )


@dataclass
class ReconcilePlan:
    """Removals first (they free names and room), then replacements, then creations."""

    create: list[DesiredInstance] = field(default_factory=list)
    replace: list[tuple[Instance, DesiredInstance]] = field(default_factory=list)
    remove: list[Instance] = field(default_factory=list)
    keep: list[Instance] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return not (self.create or self.replace or self.remove)


def plan_reconcile(
    desired: Sequence[DesiredInstance],
    instances: Sequence[Instance],
    held: Collection[tuple[str, str]] = (),
) -> ReconcilePlan:
    """The plan that turns the node's controller instances into ``desired``, leaving the
    (deployment, replica) pairs in ``held`` alone.

    ``instances`` may include unlabelled ones; they are ignored. Deterministic: the same input
    gives the same plan (instances in the order given, desired in the order desired).
    """
    plan = ReconcilePlan()
    wanted: dict[tuple[str, str], DesiredInstance] = {}
    for item in desired:
        if (item.deployment, item.replica) not in held:
            wanted.setdefault((item.deployment, item.replica), item)
    # Per replica: the instance kept (same revision, preferred) or replaced (any other).
    claimed: dict[tuple[str, str], Instance] = {}
    for instance in instances:
        marks = marks_of(instance.labels)
        if marks is None:
            continue
        key = (marks.deployment, marks.replica or "")
        if key in held:
            continue
        target = wanted.get(key) if marks.replica is not None else None
        if target is None:
            plan.remove.append(instance)
            continue
        current = claimed.get(key)
        if current is None:
            claimed[key] = instance
        elif marks.revision == target.revision and marks_of(current.labels) != marks:
            plan.remove.append(current)  # a duplicate of an older revision; this one is current
            claimed[key] = instance
        else:
            plan.remove.append(instance)  # a duplicate of a replica already claimed
    for key, item in wanted.items():
        found = claimed.get(key)
        if found is None:
            plan.create.append(item)
        elif marks_of(found.labels) == Marks(item.deployment, item.replica, item.revision):
            plan.keep.append(found)
        else:
            plan.replace.append((found, item))
    return plan
