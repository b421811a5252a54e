from __future__ import annotations

import pytest
from pydantic import ValidationError

from ukedge.errors import UsageError
from ukedge.host import PortMapping, RunRequest, parse_port_mapping


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18080:8080", PortMapping(host_port=18080, guest_port=8080)),
        ("0.0.0.0:80:8080", PortMapping(host_ip="0.0.0.0", host_port=80, guest_port=8080)),
        ("5353:53/udp", PortMapping(host_port=5353, guest_port=53, protocol="udp")),
    ],
)
def test_port_mapping(text: str, expected: PortMapping) -> None:
    assert parse_port_mapping(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("8080", "expected"),
        ("0:8080", "host port 0"),
        ("80:70000", "guest port 70000"),
        ("a:b", "expected"),
    ],
)
def test_port_mapping_errors_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_port_mapping(text)


def test_run_request_rejects_bad_env_names_and_sizes() -> None:
    with pytest.raises(ValidationError, match="invalid environment variable name"):
        RunRequest(image="x", env={"A=B": "1"})
    with pytest.raises(ValidationError, match="memory_mib"):
        RunRequest(image="x", memory_mib=1)


def test_auto_remove_excludes_another_run_after_the_end() -> None:
    assert RunRequest(image="x", auto_remove=True).auto_remove
    with pytest.raises(ValidationError, match="cannot be combined with a restart policy"):
        RunRequest(image="x", auto_remove=True, restart={"name": "on-failure"})
    with pytest.raises(ValidationError, match="cannot be combined with on_demand"):
        RunRequest(
            image="x",
            auto_remove=True,
            on_demand=True,
            ports=[PortMapping(host_port=18080, guest_port=8080)],
        )
