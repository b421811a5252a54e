"""The controller's move order as the source agent turns it into a migrate request: its mode
and post-copy carried over, a post-copy order for a snapshot move (a malformed controller's)
not turned into a refused request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ukedge.host.link import MoveOrder
from ukedge.host.migration import LinkMoves, MigrateRequest, Mode

OFFER = {
    "node": "b",
    "host": "10.0.0.2",
    "port": 7611,
    "cert_pem": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    "fingerprint": "a" * 64,
    "ticket": "t" * 32,
}


@dataclass
class _Started:
    id: str


@dataclass
class _Migrations:
    """Records what LinkMoves asks of the migration service (the logic under test is the
    order's translation; moves themselves are tested with real agents)."""

    started: list[tuple[str, MigrateRequest]] = field(default_factory=list)

    def start(self, key: str, request: MigrateRequest) -> _Started:
        self.started.append((key, request))
        return _Started(f"m{len(self.started)}")


@pytest.mark.parametrize(
    ("mode", "postcopy", "expected"),
    [("live", True, True), ("live", False, False), ("snapshot", True, False)],
)
def test_an_order_becomes_a_request_with_its_mode_and_postcopy(
    mode: Any, postcopy: bool, expected: bool
) -> None:
    migrations = _Migrations()
    link = LinkMoves(migrations, "10.0.0.1")  # type: ignore[arg-type]
    order = MoveOrder(move="x", instance="agg-r1", mode=mode, offer=OFFER, postcopy=postcopy)
    assert link.start(order, []) == "m1"
    ((key, request),) = migrations.started
    assert key == "agg-r1"
    assert (request.mode, request.postcopy, request.free_ports) == (Mode(mode), expected, True)
