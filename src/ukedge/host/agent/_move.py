"""Moving an instance between two agents, as a client drives it: get an offer from the target,
hand it to the source, follow the move to its end (``ukedge migrate``, tests, the bench)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ukedge.errors import MigrationError
from ukedge.host._models import PortMapping
from ukedge.host.agent._client import AgentClient
from ukedge.host.migration import MigrateRequest, MigrationOffer, MigrationStatus, Mode, Step

__all__ = ["move_instance"]

#: How long each status poll waits on the source for the move to end.
_POLL_S = 0.5


def move_instance(
    source: AgentClient,
    key: str,
    target: AgentClient,
    *,
    mode: Mode = Mode.SNAPSHOT,
    ports: list[PortMapping] | None = None,
    compress: int = 1,
    compress_always: bool = False,
    downtime_limit_ms: int | None = None,
    auto_converge: bool = True,
    postcopy: bool = False,
    on_status: Callable[[MigrationStatus], None] | None = None,
    timeout: float = 1800.0,
    via: Callable[[MigrationOffer], tuple[str, int]] | None = None,
) -> MigrationStatus:
    """Move ``key`` from ``source`` to ``target`` and return how the move ended.

    The offer travels through this client, which holds both agents' tokens; the state goes
    straight from source to target over their TLS channel; ``via`` maps the offer to the
    (HOST, PORT) of a tunnel that leads to the target's listener (TLS runs end to end through
    it). Raises MigrationError when the move
    failed or was cancelled (the source runs on), KeyboardInterrupt after cancelling the move.
    """
    offer = target.migration_offer()
    if target.tcp_host and offer.host in ("0.0.0.0", "::", ""):
        offer = offer.model_copy(update={"host": target.tcp_host})
    if via is not None:
        host, port = via(offer)
        offer = offer.model_copy(update={"host": host, "port": port})
    request = MigrateRequest(
        offer=offer,
        mode=mode,
        ports=ports,
        compress=compress,
        compress_always=compress_always,
        downtime_limit_ms=downtime_limit_ms,
        auto_converge=auto_converge,
        postcopy=postcopy,
    )
    status = source.migrate(key, request)
    deadline = time.monotonic() + timeout
    try:
        while not status.step.final:
            if on_status is not None:
                on_status(status)
            if time.monotonic() > deadline:
                raise MigrationError(
                    f"migration {status.id} did not end within {timeout:g} s; it goes on "
                    "(see GET /v1/migrations on the source)",
                    status.step.value,
                )
            status = source.migration(status.id, wait=_POLL_S)
    except KeyboardInterrupt:
        source.cancel_migration(status.id)
        raise
    if on_status is not None:
        on_status(status)
    if status.step.value != "done" and Step.POSTCOPY.value in status.steps:
        raise MigrationError(f"moving {status.name} to {offer.node} failed: {status.error}")
    if status.step.value != "done":
        raise MigrationError(
            f"moving {status.name} to {offer.node} {status.step.value} at "
            f"{(status.failed_step or status.step).value}: {status.error}; it runs on at the "
            "source",
            (status.failed_step or status.step).value,
        )
    return status
