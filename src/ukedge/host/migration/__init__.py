"""Moving a running instance to another node: the agent-to-agent protocol (``_protocol``), its
TLS channel with a pinned certificate and one-time tickets (``_channel``), the target's
listener (``_incoming``), the source's driver (``_outgoing``), the service an agent owns
(``_service``); its REST routes are the agent's (``_routes_migrations``). The instance
manager's side is :class:`~ukedge.host.instances._moves.InstanceMoves`.

The service (TLS, cryptography, the listener) loads on first use: clients need the models only.
"""

import typing

from ukedge._lazy import lazy_exports
from ukedge.host.migration._models import MigrateRequest, MigrationOffer, MigrationStatus
from ukedge.host.migration._protocol import Mode, MoveState, Step, TicketBook

__all__ = [
    "LinkMoves",
    "MigrateRequest",
    "MigrationOffer",
    "MigrationStatus",
    "Migrations",
    "Mode",
    "MoveState",
    "Step",
    "TicketBook",
]

if typing.TYPE_CHECKING:
    from ukedge.host.migration._service import LinkMoves, Migrations

_LAZY = {
    "LinkMoves": "ukedge.host.migration._service",
    "Migrations": "ukedge.host.migration._service",
}

__getattr__ = lazy_exports(globals(), _LAZY)
