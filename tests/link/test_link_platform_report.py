"""What a node of a set platform says in its heartbeat, and that the fields added for it stay
off the wire while empty (a controller that predates them refuses unknown fields)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ukedge.host import LocalNode, NodeLayout, open_node
from ukedge.host.link import Heartbeat, NodeResources
from ukedge.host.link._report import build_heartbeat
from ukedge.image import parse_platform


@pytest.fixture
def arm_node(tmp_path: Path) -> Iterator[LocalNode]:
    node = open_node(NodeLayout.data_dir(tmp_path), platform=parse_platform("linux/arm64/v8"))
    yield node
    node.close()
    node.manager.close()


def test_an_arm64_node_reports_its_platform_and_its_accelerator(arm_node: LocalNode) -> None:
    beat = build_heartbeat(
        arm_node,
        accelerator="kvm",  # the host's own probe: not what an arm64 guest gets here
        applied_generation=0,
        accelerators={"linux/amd64": "kvm", "linux/arm64": "tcg"},
    )
    assert (beat.architecture, beat.platform, beat.accelerator) == (
        "aarch64",
        "linux/arm64/v8",
        "tcg",
    )
    assert beat.model_dump(mode="json")["accelerators"] == {
        "linux/amd64": "kvm",
        "linux/arm64": "tcg",
    }


def test_new_heartbeat_fields_stay_off_the_wire_while_empty() -> None:
    beat = Heartbeat(
        name="n",
        architecture="x86_64",
        accelerator="tcg",
        capacity=NodeResources(memory_mib=1, vcpus=1),
        allocated=NodeResources(memory_mib=0, vcpus=0),
        accelerators={},
    )
    body = beat.model_dump(mode="json")
    assert "platform" not in body and "accelerators" not in body
    assert Heartbeat.model_validate(body) == beat.model_copy(update={"accelerators": None})
