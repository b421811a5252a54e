"""The heartbeat's move fields: left out while empty (a first-release peer, which refuses
unknown fields, reads what a newer one sends), and carried whole when set."""

from __future__ import annotations

import json

from ukedge.host.link import (
    Heartbeat,
    HeartbeatReply,
    MoveOffer,
    MoveOrder,
    MoveReport,
    NodeResources,
)

#: The fields of the first release's models.
FIRST_HEARTBEAT = {
    "name",
    "architecture",
    "accelerator",
    "labels",
    "capacity",
    "allocated",
    "cached_layers",
    "instances",
    "applied_generation",
}
FIRST_REPLY = {"desired", "heartbeat_interval_s"}


def _beat(**moves: object) -> Heartbeat:
    resources = NodeResources(memory_mib=512, vcpus=2)
    return Heartbeat(
        name="a",
        architecture="x86_64",
        accelerator="tcg",
        capacity=resources,
        allocated=resources,
        **moves,  # type: ignore[arg-type]
    )


def test_without_moves_the_messages_have_the_first_release_fields_only() -> None:
    assert set(json.loads(_beat().model_dump_json())) == FIRST_HEARTBEAT
    assert set(_beat().model_dump(mode="json")) == FIRST_HEARTBEAT
    reply = HeartbeatReply(heartbeat_interval_s=2)
    assert set(json.loads(reply.model_dump_json())) == FIRST_REPLY


def test_moves_round_trip() -> None:
    offer = {"node": "b", "host": "10.0.0.2", "port": 7611}
    beat = _beat(
        migration_host="10.0.0.1",
        offers=[MoveOffer(move="m1", offer=offer)],
        move_reports=[MoveReport(move="m2", state="failed", step="transfer", error="broke")],
    )
    assert Heartbeat.model_validate_json(beat.model_dump_json()) == beat
    reply = HeartbeatReply(
        heartbeat_interval_s=2,
        offer_requests=["m1"],
        moves=[MoveOrder(move="m2", instance="agg-r1", mode="live", offer=offer)],
    )
    assert HeartbeatReply.model_validate_json(reply.model_dump_json()) == reply


def test_a_move_order_names_postcopy_only_when_set() -> None:
    """An order without post-copy is what an agent of the release before it accepts (it
    refuses unknown fields); one with it carries it."""
    offer = {"node": "b", "host": "10.0.0.2", "port": 7611}
    plain = MoveOrder(move="m1", instance="agg-r1", mode="live", offer=offer)
    assert set(json.loads(plain.model_dump_json())) == {"move", "instance", "mode", "offer"}
    postcopy = plain.model_copy(update={"postcopy": True})
    assert json.loads(postcopy.model_dump_json())["postcopy"] is True
    assert MoveOrder.model_validate_json(postcopy.model_dump_json()) == postcopy
    reply = HeartbeatReply(heartbeat_interval_s=2, moves=[postcopy])
    assert HeartbeatReply.model_validate_json(reply.model_dump_json()) == reply
