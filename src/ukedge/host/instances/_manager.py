"""The instance manager: the one implementation of instance lifecycle on a host.

``ukedge run`` uses it in-process (daemonless, like podman and kraft) and the host agent serves
the same manager over REST. An instance is an image plus overrides; each start runs one machine
of a hypervisor backend in the instance's directory. Its record (SQLite) says what was asked and
what was last seen, the machine's work directory holds what the hypervisor knows. Reading an
instance reconciles the two: a machine that ended while nobody watched becomes ``exited`` with
the app's status, or ``failed``.

Every record change goes through :meth:`InstanceManager._change`, which commits it and then
tells the ``listeners`` (the agent's event stream). :meth:`InstanceManager.supervise` is the
agent's reconcile pass: health probes, restart policies with back-off.

Threads: the agent calls ``supervise`` from one thread while REST calls run in others. Each
instance has a lock; operations that decide from an instance's state and then act on its machine
(start, stop, kill, remove, a policy restart) hold it, and ``supervise`` skips an instance whose
lock is taken. Across processes, the decisive writes re-check the record inside their SQLite
transaction (a start that finds a stop arrived while it booted kills what it started).

Crashes: a start, stop or prewarm holds its instance's operation lock (``_oplock``) from before
it writes a transitional state (``starting``, ``stopping``) until it has written the next, so
a reader that finds such a state with the lock free knows the process doing it died and
finishes the job (:meth:`InstanceManager._recover`): the restarted agent's first read adopts a
machine a dead starter left, fails the run when none runs, kills what a dead stop left.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable

from ukedge.errors import (
    MachineError,
    NoSuchInstanceError,
    UkedgeError,
)
from ukedge.host._models import (
    HealthStatus,
    Instance,
    InstanceState,
)
from ukedge.host.instances._moves import InstanceMoves
from ukedge.host.instances._probes import Probe, probe_applies, probe_verdict
from ukedge.host.instances._restart import next_delay, wants_restart

__all__ = ["InstanceManager"]

log = logging.getLogger(__name__)

#: How long a supervise pass waits for the probes it started (the rest apply next pass).
_PROBE_WAIT_S = 0.1


class InstanceManager(InstanceMoves):
    """Creates, starts, observes, restarts, stops and removes instances on this host.

    Built in floors, each using only the ones below: records, events and observation
    (:class:`~ukedge.host.instances._observe.ObservedInstances`), the operations
    (:class:`~ukedge.host.instances._lifecycle.InstanceLifecycle`), moves between nodes
    (:class:`~ukedge.host.instances._moves.InstanceMoves`), and here the supervisor pass that
    applies health probes and restart policies.
    """

    # -- supervision -----------------------------------------------------------------------------

    def supervise(self) -> None:
        """One reconcile pass (the agent calls it every ~0.5 s from one thread): record ended
        machines, probe health where due, kill what the policy restarts for being unhealthy,
        and start again what the restart policy says once its back-off has passed.

        An instance busy with another operation (a stop in progress) is left for the next pass.
        Probes run in a small thread pool; a pass waits for them briefly, and records what
        a slower probe found in the next pass.
        """
        self._apply_probes()
        for record in self.records.all():
            lock = self._lock(record.id)
            if not lock.acquire(blocking=False):
                continue
            try:
                # Read again under the lock: the list above may predate a stop or start.
                self._supervise_one(self.records.find(record.id))
            except NoSuchInstanceError:
                pass  # removed meanwhile
            except UkedgeError as exc:
                log.warning("instance %s: %s", record.name, exc)
            except Exception:
                log.exception("supervising instance %s failed", record.name)
            finally:
                lock.release()
        pending = self._probes.pending()
        if pending:
            concurrent.futures.wait(pending, timeout=_PROBE_WAIT_S)
            self._apply_probes()

    def _supervise_one(self, record: Instance) -> None:
        instance = self._refresh(record)
        if instance.state is InstanceState.RUNNING:
            if self._restart_unhealthy(instance):
                self._kill_unhealthy(instance)
            elif instance.health is not HealthStatus.NONE:
                self._probes.maybe_probe(instance, self.upstream, self.steady_probe_interval_s)
            return
        if (
            instance.auto_remove
            and instance.state in (InstanceState.EXITED, InstanceState.FAILED)
            and instance.restart_at is None
        ):
            log.info("instance %s has ended; removing it (--rm)", instance.name)
            self.remove(instance.id)
            return
        if (
            not instance.state.active
            and instance.restart_at is not None
            and not instance.stopped_by_user
            and instance.restart_at <= time.time()
        ):
            log.info(
                "restarting instance %s (restart %d, policy %s)",
                instance.name,
                instance.restart_count + 1,
                instance.restart,
            )
            try:
                self._start(instance.id, restart=True)
            except Exception as exc:
                # A start that failed before its machine existed (image gone, no room, a bug)
                # leaves the record as it was: try again after a longer back-off, not every pass.
                self._change(instance.id, self._retry_later(instance.restart_at, str(exc)))
                raise

    @staticmethod
    def _retry_later(due: float, error: str) -> Callable[[Instance], Instance]:
        def change(i: Instance) -> Instance:
            if i.state.active or i.restart_at != due:
                return i  # the failed start got as far as recording its own end
            delay = next_delay(i.restart_delay_s, 0.0)
            return i.model_copy(
                update={"error": error, "restart_at": time.time() + delay, "restart_delay_s": delay}
            )

        return change

    def _restart_unhealthy(self, instance: Instance) -> bool:
        """Whether an unhealthy app is killed so that its restart policy starts it again."""
        return instance.health is HealthStatus.UNHEALTHY and wants_restart(
            instance.restart,
            failed=True,
            restart_count=instance.restart_count,
            stopped_by_user=instance.stopped_by_user,
        )

    def _kill_unhealthy(self, instance: Instance) -> None:
        log.info("instance %s is unhealthy; killing it for its restart policy", instance.name)
        self._set(
            instance.id,
            error=f"unhealthy: {instance.health_failures} health checks failed in a row",
        )
        with contextlib.suppress(MachineError):
            self._machine(instance).kill()
        self._refresh(self.records.find(instance.id))

    def _apply_probes(self) -> None:
        """Record what the finished probes found."""
        for instance_id, probe in self._probes.finished():
            self._apply_probe(instance_id, probe)

    def _apply_probe(self, instance_id: str, probe: Probe) -> None:
        """Record a finished probe's verdict (if the run it probed still runs)."""
        try:
            passed = probe.future.result()
            check = self._probes.check(self.records.find(instance_id))
        except NoSuchInstanceError:
            return
        except Exception:
            log.exception("health probe of instance %s failed", instance_id)
            return
        if check is None:
            return
        verdict = probe_verdict(probe, passed, check, self.min_start_period_s)
        failed = False

        def change(i: Instance) -> Instance:
            nonlocal failed
            failed = not passed and probe_applies(probe, i)
            return verdict(i)

        with contextlib.suppress(NoSuchInstanceError):
            self._change(instance_id, change)
        if failed:
            self.health_check_failures[instance_id] += 1
