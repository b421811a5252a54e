"""The published-port model every layer shares: ``-p`` parsing, validation, JSON form."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ukedge.errors import UsageError
from ukedge.ports import PortMapping, parse_port_mapping


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


@pytest.mark.parametrize(
    "kw",
    [
        {"host_port": 0, "guest_port": 80},
        {"host_port": 80, "guest_port": 70000},
        {"host_port": 80, "guest_port": 80, "protocol": "sctp"},
        {"host_port": 80, "guest_port": 80, "host_ip": "localhost"},
        {"host_port": "80", "guest_port": 80},
    ],
)
def test_bad_port_mapping_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PortMapping(**kw)  # type: ignore[arg-type]


def test_json_form_is_the_wire_shape() -> None:
    """The agent's API, the controller's wire protocol and a machine's state file all read it."""
    mapping = PortMapping(host_ip="0.0.0.0", host_port=5353, guest_port=53, protocol="udp")
    assert mapping.model_dump() == {
        "host_ip": "0.0.0.0",
        "host_port": 5353,
        "guest_port": 53,
        "protocol": "udp",
    }
    assert PortMapping.model_validate(mapping.model_dump()) == mapping


def test_overlaps_on_the_same_host_socket() -> None:
    a = PortMapping(host_port=80, guest_port=8080)
    assert a.overlaps(PortMapping(host_ip="0.0.0.0", host_port=80, guest_port=81))
    assert not a.overlaps(PortMapping(host_port=80, guest_port=8080, protocol="udp"))
    assert not a.overlaps(PortMapping(host_ip="10.0.0.1", host_port=80, guest_port=8080))
