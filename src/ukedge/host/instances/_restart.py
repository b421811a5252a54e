"""Restart policies and their back-off, as pure functions of an instance's last run.

Docker's rules: the first restart waits 100 ms, each further one twice as long as the one
before, at most a minute; a run that lasted 10 s or more resets the delay, so an app that
crashes once a day restarts at once while a crash loop slows down. ``restart_count`` counts every
restart the policy made; ``on-failure:N`` stops after N of them.
"""

from __future__ import annotations

from ukedge.host._models import InstanceState, RestartPolicy

__all__ = [
    "BACKOFF_INITIAL_S",
    "BACKOFF_MAX_S",
    "BACKOFF_RESET_AFTER_S",
    "is_failure",
    "next_delay",
    "wants_restart",
]

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 60.0
#: A run at least this long resets the back-off to its initial delay.
BACKOFF_RESET_AFTER_S = 10.0


def is_failure(state: InstanceState, exit_code: int | None, *, unhealthy: bool) -> bool:
    """Whether an ended run counts as a failure for ``on-failure``: a non-zero exit status, a
    machine that failed without one, or an app its health check declared unhealthy."""
    return unhealthy or state is InstanceState.FAILED or exit_code != 0


def wants_restart(
    policy: RestartPolicy, *, failed: bool, restart_count: int, stopped_by_user: bool
) -> bool:
    """Whether the policy starts an ended instance again."""
    if stopped_by_user or policy.name == "no":
        return False
    if policy.name == "always":
        return True
    return failed and (policy.max_retries is None or restart_count < policy.max_retries)


def next_delay(previous: float | None, ran_for_s: float) -> float:
    """The wait before the next restart, given the one before it (None: none yet) and how long
    the run that just ended lasted."""
    if previous is None or previous <= 0 or ran_for_s >= BACKOFF_RESET_AFTER_S:
        return BACKOFF_INITIAL_S
    return min(previous * 2, BACKOFF_MAX_S)
