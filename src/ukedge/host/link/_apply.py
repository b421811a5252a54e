"""Applying a reconcile plan to the node, through the same :class:`LocalNode` the CLI and the
agent's REST API use (an image is pulled exactly as ``ukedge run --host`` pulls it).

Each action is independent: one that fails (an image that cannot be pulled, no room, a name a
hand-made instance holds) is recorded against its instance name and reported in the next
heartbeat, and the others go on. The pass is retried on the next round, so a failure heals by
itself once its cause is gone. Nothing here raises for a single instance.

Crashes: every action is one call of the manager, whose records are transactions; a pass
interrupted half-way is finished by the next one (the plan is recomputed from what is there).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ukedge.errors import InstanceError, UkedgeError
from ukedge.host._models import Instance
from ukedge.host._node import LocalNode
from ukedge.host.link._reconcile import DEPLOYMENT_LABEL, plan_reconcile, request_for
from ukedge.host.link._wire import DesiredInstance, DesiredState

__all__ = ["Applier", "ApplyResult"]

log = logging.getLogger(__name__)

#: How long a removed or replaced instance's app gets to shut down before it is killed.
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ApplyResult:
    """What one pass did; ``errors`` by instance name, with the desired instance it concerns."""

    created: list[str]
    replaced: list[str]
    removed: list[str]
    errors: dict[str, tuple[DesiredInstance | None, str]]


class Applier:
    """Brings the node's controller instances to a desired state, one pass at a time."""

    def __init__(self, node: LocalNode, *, stop_timeout: float = STOP_TIMEOUT_S) -> None:
        self.node = node
        self.stop_timeout = stop_timeout
        #: Images already pre-pulled (one pull per reference, not one per pass).
        self._prepulled: set[str] = set()

    def apply(self, desired: DesiredState) -> ApplyResult:
        instances = [i for i in self.node.list(all_instances=True) if DEPLOYMENT_LABEL in i.labels]
        plan = plan_reconcile(desired.instances, instances)
        result = ApplyResult([], [], [], {})
        for instance in plan.remove:
            if self._try(result, instance.name, None, partial(self._remove, instance)):
                result.removed.append(instance.name)
        for instance, item in plan.replace:
            if self._try(result, item.name, item, partial(self._replace, instance, item)):
                result.replaced.append(item.name)
        for item in plan.create:
            if self._try(result, item.name, item, partial(self._create, item)):
                result.created.append(item.name)
        self._prepull(desired.prepull)
        if not plan.idle:
            log.info(
                "desired state %d: created %s, replaced %s, removed %s, %d failed",
                desired.generation,
                result.created,
                result.replaced,
                result.removed,
                len(result.errors),
            )
        return result

    @staticmethod
    def _try(
        result: ApplyResult,
        name: str,
        item: DesiredInstance | None,
        action: Callable[[], object],
    ) -> bool:
        try:
            action()
        except UkedgeError as exc:
            log.warning("instance %s: %s", name, exc)
            result.errors[name] = (item, str(exc))
            return False
        except Exception as exc:
            log.exception("instance %s: reconcile failed", name)
            result.errors[name] = (item, f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _remove(self, instance: Instance) -> None:
        with contextlib.suppress(InstanceError):  # it ended meanwhile, or was never running
            if self.node.get(instance.id).state.active:
                self.node.stop(instance.id, self.stop_timeout)
        self.node.remove(instance.id, force=True)

    def _replace(self, instance: Instance, item: DesiredInstance) -> None:
        self._remove(instance)
        self._create(item)

    def _create(self, item: DesiredInstance) -> None:
        self.node.run(request_for(item))

    def _prepull(self, refs: list[str]) -> None:
        for ref in refs:
            if ref in self._prepulled:
                continue
            try:
                self.node.pull(ref)
            except UkedgeError as exc:
                log.warning("could not pre-pull %s (tried again next pass): %s", ref, exc)
                continue
            self._prepulled.add(ref)
