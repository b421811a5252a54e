"""Property-based requests from the controller's own OpenAPI document, over real HTTP.

Schemathesis generates valid and invalid requests for every operation (admin token, and the
node routes with a real node's credential): none may answer 5xx. Bounded and deterministic
(see kit.fuzz); the results stream is left out (endless by design). Marked ``fuzz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from kit.controller import make_controller, running_controller
from kit.fuzz import examples, fuzz_operations
from ukedge.host.link import ENROL_PATH, JoinToken

pytestmark = pytest.mark.fuzz

EXAMPLES = examples(25)


def test_no_server_errors(tmp_path: Path, db_url: str) -> None:
    controller = make_controller(tmp_path / "controller", db_url)
    try:
        with running_controller(controller, tls=False) as running, running.client() as admin:
            token = JoinToken.parse(admin.post("/v1/tokens", json={}).json()["token"])
            enrolled = admin.post(
                ENROL_PATH,
                json={"token": token.credential, "name": "edge-1", "architecture": "amd64"},
            ).json()
            admin_headers = dict(admin.headers)
            node_headers = {"Authorization": f"Bearer {enrolled['credential']}"}
            schema = schemathesis.openapi.from_url(
                f"{running.url}/openapi.json", headers=admin_headers
            )

            def call(case: Any) -> None:
                if "node_id" in (case.path_parameters or {}):
                    case.path_parameters["node_id"] = enrolled["node_id"]
                headers = node_headers if case.path.startswith("/v1/nodes/{node_id}/") else None
                case.call_and_validate(
                    headers=headers or {"Authorization": admin_headers["authorization"]},
                    timeout=60,
                    checks=[not_a_server_error],
                )

            operations, failures = fuzz_operations(
                schema, max_examples=EXAMPLES, call=call, skip=["/v1/results/stream"]
            )
            assert operations >= 20
            assert not failures, "\n\n".join(failures)
    finally:
        controller.close()
