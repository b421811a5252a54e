"""One schemathesis loop for every server's fuzz test: each operation of an OpenAPI document,
valid and invalid requests, deterministic and bounded.

``derandomize`` sends the same requests every run and no example database is kept, so a failure
reproduces; every operation runs even after one fails, and the failures come back together.
``UKEDGE_FUZZ_EXAMPLES`` raises the examples per operation for a long run outside CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import hypothesis
from hypothesis import strategies as st
from schemathesis import GenerationMode


def examples(default: int) -> int:
    """Examples per operation: ``default``, or ``UKEDGE_FUZZ_EXAMPLES`` when set."""
    return int(os.environ.get("UKEDGE_FUZZ_EXAMPLES", str(default)))


def fuzz_operations(
    schema: Any,
    *,
    max_examples: int,
    call: Callable[[Any], None],
    skip: Iterable[str] = (),
) -> tuple[int, list[str]]:
    """Run ``call(case)`` on generated cases of every operation not in ``skip`` (paths).

    Returns how many operations ran and one message per operation that failed.
    """
    skipped = set(skip)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in skipped:
            continue
        operations += 1
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @hypothesis.given(case=cases)
        @hypothesis.settings(
            max_examples=max_examples,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def run(case: Any) -> None:
            call(case)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, not only the first
            failures.append(f"{operation.label}: {exc}")
    return operations, failures
