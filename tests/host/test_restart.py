"""Restart policies and back-off: pure functions of an instance's last run."""

from __future__ import annotations

import pytest

from ukedge.host import InstanceState, parse_restart_policy
from ukedge.host.instances._restart import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    is_failure,
    next_delay,
    wants_restart,
)


@pytest.mark.parametrize(
    ("state", "code", "unhealthy", "failed"),
    [
        (InstanceState.EXITED, 0, False, False),
        (InstanceState.EXITED, 3, False, True),
        (InstanceState.EXITED, 137, False, True),
        (InstanceState.FAILED, None, False, True),
        (InstanceState.EXITED, 0, True, True),
    ],
)
def test_what_counts_as_a_failure(
    state: InstanceState, code: int | None, unhealthy: bool, failed: bool
) -> None:
    assert is_failure(state, code, unhealthy=unhealthy) is failed


@pytest.mark.parametrize(
    ("policy", "failed", "count", "expected"),
    [
        ("no", True, 0, False),
        ("always", False, 0, True),
        ("always", True, 500, True),
        ("on-failure", False, 0, False),
        ("on-failure", True, 10_000, True),
        ("on-failure:2", True, 0, True),
        ("on-failure:2", True, 1, True),
        ("on-failure:2", True, 2, False),
    ],
)
def test_policies(policy: str, failed: bool, count: int, expected: bool) -> None:
    assert (
        wants_restart(
            parse_restart_policy(policy), failed=failed, restart_count=count, stopped_by_user=False
        )
        is expected
    )


@pytest.mark.parametrize("policy", ["always", "on-failure", "on-failure:5"])
def test_a_user_stop_never_restarts(policy: str) -> None:
    assert not wants_restart(
        parse_restart_policy(policy), failed=True, restart_count=0, stopped_by_user=True
    )


def test_backoff_doubles_caps_and_resets_after_a_long_run() -> None:
    delays = []
    delay = None
    for _ in range(12):
        delay = next_delay(delay, ran_for_s=0.5)
        delays.append(delay)
    assert delays[:4] == [BACKOFF_INITIAL_S, 0.2, 0.4, 0.8]
    assert delays[-1] == BACKOFF_MAX_S
    assert max(delays) == BACKOFF_MAX_S
    assert next_delay(BACKOFF_MAX_S, ran_for_s=10.0) == BACKOFF_INITIAL_S
    assert next_delay(BACKOFF_MAX_S, ran_for_s=9.9) == BACKOFF_MAX_S
