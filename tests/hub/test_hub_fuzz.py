"""Property-based requests from the hub's own OpenAPI document (``/v2`` included), over real HTTP.

Schemathesis generates requests for every operation the document describes, valid and not,
against a hub served by uvicorn exactly as ``hub serve`` configures it: none may answer 5xx.
Afterwards the invariant checker (``hub fsck``'s code, content hashed) must find the data whole.

Bounded and deterministic: a fixed number of examples per operation, ``derandomize`` (the same
requests every run), no example database. Marked ``fuzz`` so it can be selected (``-m fuzz``) or
left out; ``make test`` runs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from kit.hub import RunningHub, push_image, start_hub
from ukedge.hub import run_fsck

pytestmark = pytest.mark.fuzz

#: Examples per operation; ``UKEDGE_FUZZ_EXAMPLES`` raises it for a long run outside CI.
EXAMPLES = int(os.environ.get("UKEDGE_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    running = start_hub(Path(tmp_path_factory.mktemp("fuzz")) / "hub", body_timeout=5)
    with running.client() as c:  # something for generated names to find now and then
        push_image(c, "a", "a", [b"layer"])
    yield running
    running.stop()


def test_no_server_errors(fuzz_hub: RunningHub) -> None:
    """Valid and invalid requests for every operation; a failure names the operation and case."""
    schema = schemathesis.openapi.from_url(f"{fuzz_hub.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @hypothesis.given(case=cases)
        @hypothesis.settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def run(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # collect every operation's failure, not only the first
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 20  # /v2 included
    assert not failures, "\n\n".join(failures)
    # The hub's own count agrees: many requests, none answered 5xx.
    by_status: dict[str, float] = {}
    for metric in fuzz_hub.hub.metrics.http.requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                status = sample.labels["status"]
                by_status[status] = by_status.get(status, 0) + sample.value
    print("FUZZ hub", operations, "operations", by_status)
    assert sum(by_status.values()) >= operations * EXAMPLES // 2, by_status
    assert not [s for s in by_status if s.startswith("5")], by_status


def test_invariants_hold_after_fuzzing(fuzz_hub: RunningHub) -> None:
    report = run_fsck(fuzz_hub.settings, verify=True)
    assert report.ok, report.as_json()
