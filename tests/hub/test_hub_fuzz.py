"""Property-based requests from the hub's own OpenAPI document (``/v2`` included), over real HTTP.

Schemathesis generates requests for every operation the document describes, valid and not,
against a hub served by uvicorn exactly as ``hub serve`` configures it: none may answer 5xx.
Afterwards the invariant checker (``hub fsck``'s code, content hashed) must find the data whole.

Bounded and deterministic: a fixed number of examples per operation, ``derandomize`` (the same
requests every run), no example database. Marked ``fuzz`` so it can be selected (``-m fuzz``) or
left out; ``make test`` runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from kit.fuzz import examples, fuzz_operations
from kit.hub import RunningHub, push_image, start_hub
from ukedge.hub import run_fsck

pytestmark = pytest.mark.fuzz

EXAMPLES = examples(40)


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

    def call(case: Any) -> None:
        case.call_and_validate(checks=[not_a_server_error])

    operations, failures = fuzz_operations(schema, max_examples=EXAMPLES, call=call)
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
