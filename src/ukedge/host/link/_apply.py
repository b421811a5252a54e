"""Applying a reconcile plan to the node, through the same :class:`LocalNode` the CLI and the
agent's REST API use (an image is pulled exactly as ``ukedge run --host`` pulls it).

Each action is independent: one that fails (an image that cannot be pulled, no room, a name a
hand-made instance holds) is recorded against its instance name and reported in the next
heartbeat, and the others go on. A failed creation is tried again after a back-off (doubling
from ``RETRY_MIN_S`` to ``RETRY_MAX_S``; at once when the desired instance changes), so a
failure heals by itself once its cause is gone without a pull every few seconds over a slow
edge link. Nothing here raises for a single instance.

Crashes: every action is one call of the manager, whose records are transactions; a pass
interrupted half-way is finished by the next one (the plan is recomputed from what is there).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
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
#: The first and the longest pause before a failed creation is tried again.
RETRY_MIN_S = 2.0
RETRY_MAX_S = 120.0


@dataclass(frozen=True)
class ApplyResult:
    """What one pass did; ``errors`` by instance name, with the desired instance it concerns.
    ``deferred``: failed earlier and waiting for their back-off (their error is repeated)."""

    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: dict[str, tuple[DesiredInstance | None, str]] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Retry:
    """A failed creation: of what (the desired instance as JSON), when again, the error."""

    wanted: str
    at: float
    delay: float
    error: str


class Applier:
    """Brings the node's controller instances to a desired state, one pass at a time."""

    def __init__(
        self,
        node: LocalNode,
        *,
        stop_timeout: float = STOP_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.stop_timeout = stop_timeout
        self._clock = clock
        #: Images already pre-pulled (one pull per reference, not one per pass).
        self._prepulled: set[str] = set()
        #: Failed creations by instance name, waiting for their back-off.
        self._retries: dict[str, _Retry] = {}

    def apply(
        self,
        desired: DesiredState,
        held: Callable[[], Collection[tuple[str, str]]] | None = None,
    ) -> ApplyResult:
        """One pass. ``held``: the (deployment, replica) pairs to leave alone, asked after the
        node's instances are listed (a move's hold is taken before its instance comes or goes,
        so a pass never sees an instance gone, or come, without its hold)."""
        instances = [i for i in self.node.list(all_instances=True) if DEPLOYMENT_LABEL in i.labels]
        plan = plan_reconcile(desired.instances, instances, held() if held is not None else ())
        result = ApplyResult()
        now = self._clock()
        names = {item.name for item in desired.instances}
        self._retries = {k: v for k, v in self._retries.items() if k in names}
        for instance in plan.remove:
            if self._try(result, instance.name, None, partial(self._remove, instance)):
                result.removed.append(instance.name)
        for instance, item in plan.replace:
            if self._due(result, item, now) and self._attempt(
                result, item, now, partial(self._replace, instance, item)
            ):
                result.replaced.append(item.name)
        for item in plan.create:
            if self._due(result, item, now) and self._attempt(
                result, item, now, partial(self._create, item)
            ):
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

    def _due(self, result: ApplyResult, item: DesiredInstance, now: float) -> bool:
        """Whether to try ``item`` now; else its last error stands, as deferred."""
        retry = self._retries.get(item.name)
        if retry is None or retry.wanted != item.model_dump_json() or now >= retry.at:
            return True
        result.errors[item.name] = (item, retry.error)
        result.deferred.append(item.name)
        return False

    def _attempt(
        self, result: ApplyResult, item: DesiredInstance, now: float, action: Callable[[], object]
    ) -> bool:
        if self._try(result, item.name, item, action):
            self._retries.pop(item.name, None)
            return True
        wanted = item.model_dump_json()
        last = self._retries.get(item.name)
        delay = (
            min(last.delay * 2, RETRY_MAX_S)
            if last is not None and last.wanted == wanted
            else RETRY_MIN_S
        )
        self._retries[item.name] = _Retry(wanted, now + delay, delay, result.errors[item.name][1])
        return False

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
