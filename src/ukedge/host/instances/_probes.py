"""The supervisor's health probes: at most one in flight per instance, on a small thread pool,
due by the image's interval (or the steady interval once the app was healthy), and the verdict
a finished probe writes into the instance's record (if the run it probed still runs)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ukedge.errors import UkedgeError
from ukedge.host._models import Instance, InstanceState
from ukedge.host.instances._health import check_once, next_health
from ukedge.image import HealthCheck, ImageStore

__all__ = ["HealthProbes", "Probe", "probe_applies", "probe_verdict"]

#: A probe in ``supervise`` never waits longer than this for the app.
_PROBE_TIMEOUT_S = 1.0


@dataclass
class Probe:
    run: int
    started: float
    future: concurrent.futures.Future[bool]


class HealthProbes:
    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self._probes: dict[str, Probe] = {}
        self._due: dict[str, tuple[int, float]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        #: Health checks by image digest (an image's config never changes).
        self._checks: dict[str, HealthCheck | None] = {}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def check(self, instance: Instance) -> HealthCheck | None:
        """The health check of ``instance``'s image; None when it has none or is gone."""
        digest = instance.image_digest
        if digest not in self._checks:
            try:
                _, manifest = self._store.manifest(digest)
            except UkedgeError:
                return None  # the image went away; the running machine is probed no more
            self._checks[digest] = self._store.config(manifest).healthcheck
        return self._checks[digest]

    def maybe_probe(
        self,
        instance: Instance,
        upstream: Callable[[Instance, int], tuple[str, int]],
        steady_interval_s: float,
    ) -> None:
        """Start a probe of ``instance`` if one is due and none is in flight."""
        if instance.id in self._probes:
            return
        check = self.check(instance)
        if check is None:
            return
        now = time.monotonic()
        run, due = self._due.get(instance.id, (instance.runs, now))
        if run != instance.runs:
            due = now  # a new run: probe at once
        if now < due:
            return
        interval = check.interval_s
        if instance.healthy_at is not None:
            interval = max(interval, steady_interval_s)
        self._due[instance.id] = (instance.runs, now + interval)
        host, port = upstream(instance, check.port)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="ukedge-probe")
        future = self._pool.submit(check_once, check, host, port, max_timeout=_PROBE_TIMEOUT_S)
        self._probes[instance.id] = Probe(instance.runs, time.time(), future)

    def pending(self) -> list[concurrent.futures.Future[bool]]:
        return [p.future for p in self._probes.values()]

    def finished(self) -> Iterator[tuple[str, Probe]]:
        """The probes that are done, each once (instance id, probe)."""
        for instance_id, probe in list(self._probes.items()):
            if probe.future.done():
                del self._probes[instance_id]
                yield instance_id, probe

    def forget(self, instance_id: str) -> None:
        self._due.pop(instance_id, None)


def probe_applies(probe: Probe, instance: Instance) -> bool:
    """Whether ``probe`` probed ``instance``'s current run (and it still runs)."""
    return instance.state is InstanceState.RUNNING and instance.runs == probe.run


def probe_verdict(
    probe: Probe, passed: bool, check: HealthCheck, min_start_period_s: float
) -> Callable[[Instance], Instance]:
    """The record change a finished probe makes: health and failure count of the run it probed
    (a probe of an earlier run changes nothing)."""
    start_period = max(check.start_period_s, min_start_period_s)

    def change(i: Instance) -> Instance:
        if not probe_applies(probe, i):
            return i
        health, failures = next_health(
            i.health,
            i.health_failures,
            passed=passed,
            retries=check.retries,
            in_start_period=probe.started - (i.started_at or 0) < start_period,
        )
        healthy_at = i.healthy_at or (probe.started if passed else None)
        return i.model_copy(
            update={"health": health, "health_failures": failures, "healthy_at": healthy_at}
        )

    return change
