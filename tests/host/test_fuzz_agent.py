"""Property-based requests from the host agent's own OpenAPI document, over real HTTP.

Schemathesis generates valid and invalid requests for every operation against a real agent
process (``ukedge host serve``, token on TCP): none may answer 5xx, and every status must be one
the document lists for its route. Afterwards the node's invariants must hold (no record in a
transitional state, no QEMU nobody adopted).

Bounded and deterministic: a fixed number of examples per operation, ``derandomize`` (the same
requests every run), no example database. ``GET /v1/events`` is left out: it is an endless
stream by design. Marked ``fuzz``; ``make test`` runs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error, status_code_conformance

from kit.agent import AgentProcess, running_agent
from kit.fuzz import examples, fuzz_operations
from kit.invariants import host_problems

pytestmark = pytest.mark.fuzz

EXAMPLES = examples(100)


@pytest.fixture(scope="module")
def fuzz_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    data = tmp_path_factory.mktemp("fuzz-agent") / "data"
    with running_agent(data, "--name", "fuzz") as agent:
        yield agent


def test_no_server_errors_and_only_documented_statuses(fuzz_agent: AgentProcess) -> None:
    headers = {"Authorization": f"Bearer {fuzz_agent.token}"}
    schema = schemathesis.openapi.from_url(f"{fuzz_agent.url}/openapi.json", headers=headers)

    def call(case: Any) -> None:
        case.call_and_validate(
            headers=headers, timeout=60, checks=[not_a_server_error, status_code_conformance]
        )

    # /v1/events is an endless stream by design.
    operations, failures = fuzz_operations(
        schema, max_examples=EXAMPLES, call=call, skip=["/v1/events"]
    )
    assert operations >= 15
    assert not failures, "\n\n".join(failures)
    problems = host_problems(fuzz_agent.data / "instances", fuzz_agent.data / "snapshots")
    assert not problems, problems
    assert fuzz_agent.process is not None and fuzz_agent.process.poll() is None, "agent alive"
    # The agent's own count agrees: many requests, none answered 5xx.
    metrics = httpx.get(f"{fuzz_agent.url}/metrics", headers=headers).text
    by_status: dict[str, float] = {}
    for line in metrics.splitlines():
        found = re.match(r'ukedge_agent_requests_total\{.*status="(\d+)".*\} (\S+)', line)
        if found:
            by_status[found[1]] = by_status.get(found[1], 0) + float(found[2])
    print("FUZZ agent", operations, "operations", by_status)
    assert sum(by_status.values()) >= operations * EXAMPLES / 2
    assert not [status for status in by_status if status.startswith("5")], by_status
