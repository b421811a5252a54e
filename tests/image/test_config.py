from __future__ import annotations

import pytest
from pydantic import ValidationError

from ukedge.image import ImageConfig, KernelInfo, PortSpec


def _config(**kw: object) -> ImageConfig:
    base: dict[str, object] = {
        "name": "app",
        "runtime": "static",
        "entrypoint": ["/app/hello"],
        "kernel": KernelInfo(profile="minimal", version="6.1"),
    }
    base.update(kw)
    return ImageConfig.model_validate(base)


def test_canonical_json_is_stable_and_round_trips() -> None:
    a = _config(env={"B": "2", "A": "1"}, ports=[PortSpec(port=8080)])
    b = _config(ports=[PortSpec(port=8080)], env={"A": "1", "B": "2"})
    assert a.to_json() == b.to_json()
    assert b" " not in a.to_json()
    assert ImageConfig.from_json(a.to_json()) == a


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_mib", 1),
        ("vcpus", 0),
        ("entrypoint", []),
        ("ports", [{"port": 70000}]),
        ("bogus", 1),
        ("snapshot", "ready"),  # the default is written as no field at all
        ("snapshot", "later"),
        ("hostname", "two words"),
        ("hostname", "-x"),
    ],
)
def test_schema_rejects(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        _config(**{field: value})


def test_healthcheck_path_must_be_absolute() -> None:
    with pytest.raises(ValidationError, match="must start with"):
        _config(healthcheck={"type": "http", "port": 8080, "path": "stats"})


def test_snapshot_and_hostname_are_absent_unless_set() -> None:
    """Images built before these fields existed keep their config digest."""
    assert b"snapshot" not in _config().to_json() and b"hostname" not in _config().to_json()
    fixed = _config(snapshot="pre-app", hostname="edge-1")
    assert ImageConfig.from_json(fixed.to_json()) == fixed
