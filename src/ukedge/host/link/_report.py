"""The heartbeat's body: the node's capacity, allocation, cached layers and instances.

Capacity is what admission allows (allocatable memory and vCPUs times the over-commit ratio),
allocation what the node's instances hold by admission's rules, so the controller's scheduler
and the node's own admission agree on what fits. Desired instances that could not be created
are reported too (state ``failed`` with the reason), so the controller sees them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ukedge.host._models import HealthStatus, Instance, InstanceState
from ukedge.host._node import LocalNode
from ukedge.host.instances import host_capacity
from ukedge.host.link._reconcile import marks_of
from ukedge.host.link._wire import (
    DesiredInstance,
    Heartbeat,
    InstanceReport,
    MoveOffer,
    MoveReport,
    NodeResources,
)
from ukedge.image import Platform, parse_platform

__all__ = ["build_heartbeat", "instance_report"]

_MIB = 1 << 20


def instance_report(
    instance: Instance, error: str | None = None, *, ports: bool = False
) -> InstanceReport:
    """``ports``: with its published ports (see :func:`build_heartbeat`)."""
    marks = marks_of(instance.labels)
    return InstanceReport(
        name=instance.name,
        deployment=marks.deployment if marks else None,
        replica=marks.replica if marks else None,
        revision=marks.revision if marks else None,
        image=instance.image,
        state=instance.state,
        health=instance.health,
        restart_count=instance.restart_count,
        exit_code=instance.exit_code,
        error=error or instance.error,
        ports=list(instance.ports) if ports else [],
    )


def _missing_report(item: DesiredInstance, error: str) -> InstanceReport:
    return InstanceReport.of_desired(item, InstanceState.FAILED, HealthStatus.NONE, error=error)


def _concerns(instance: Instance, item: DesiredInstance | None) -> bool:
    """Whether an error about ``item`` is this instance's (not a hand-made namesake's)."""
    if item is None:
        return True
    marks = marks_of(instance.labels)
    return marks is not None and (marks.deployment, marks.replica) == (
        item.deployment,
        item.replica,
    )


def cached_layers(node: LocalNode) -> list[str]:
    """Digests of every blob in the node's store (layers, configs, manifests: the scheduler
    looks up the layers it knows of; a blob being written is not counted)."""
    blobs = node.cache.store.blobs_dir
    return sorted(f"sha256:{p.name}" for p in blobs.iterdir() if not p.name.startswith("."))


def build_heartbeat(
    node: LocalNode,
    *,
    accelerator: str,
    applied_generation: int,
    errors: Mapping[str, tuple[DesiredInstance | None, str]] | None = None,
    migration_host: str | None = None,
    offers: Sequence[MoveOffer] = (),
    move_reports: Sequence[MoveReport] = (),
    accelerators: Mapping[str, str] | None = None,
) -> Heartbeat:
    """The heartbeat of ``node`` now. ``errors``: the last reconcile pass's failures by
    instance name (the desired instance they concern, when there is one); the rest: the
    node's part in the controller's moves (see :mod:`._movebook`). Instances carry their ports
    only from a node that takes part in moves (``migration_host``), whose ports a move may
    change: a field a first-release controller refuses, which such a node's controller knows.
    """
    errors = errors or {}
    moves = migration_host is not None
    manager = node.manager
    capacity = manager.capacity or host_capacity()
    committed = manager.committed()
    instances = manager.list(all_instances=True)
    reports: list[InstanceReport] = []
    reported: set[str] = set()
    for instance in instances:
        item, error = errors.get(instance.name, (None, None))
        if error is not None and _concerns(instance, item):
            reported.add(instance.name)
            reports.append(instance_report(instance, error, ports=moves))
        else:
            reports.append(instance_report(instance, ports=moves))
    # Desired instances that do not exist (or whose name another instance holds): failed.
    reports += [
        _missing_report(item, error)
        for name, (item, error) in sorted(errors.items())
        if item is not None and name not in reported
    ]
    # The node's platform (its --platform), not necessarily the host's: an x86_64 host set
    # to arm64 is an arm64 node that emulates.
    own = node.manager.platform
    return Heartbeat(
        name=node.name,
        architecture=own.machine,
        platform=str(own),
        accelerators=dict(accelerators or {}),
        accelerator=_own_accelerator(own, accelerators or {}, accelerator),
        labels=node.labels,
        capacity=NodeResources(
            memory_mib=capacity.memory_limit_bytes // _MIB, vcpus=capacity.vcpu_limit
        ),
        allocated=NodeResources(memory_mib=committed.memory_bytes // _MIB, vcpus=committed.vcpus),
        cached_layers=cached_layers(node),
        instances=reports,
        applied_generation=applied_generation,
        migration_host=migration_host,
        offers=list(offers),
        move_reports=list(move_reports),
    )


def _own_accelerator(own: Platform, accelerators: Mapping[str, str], probed: str) -> str:
    """The accelerator of the node's own platform (``linux/arm64/v8`` is ``linux/arm64``'s);
    the host's probe when the node's platform is not among those reported."""
    for name, accel in accelerators.items():
        if parse_platform(name).matches(own):
            return accel
    return probed
