"""One wiring for the CLI's node and the agent's: layouts, the QEMU user setting, the parts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ukedge.errors import UsageError
from ukedge.host import (
    AgentSettings,
    Instance,
    InstanceState,
    NodeLayout,
    default_qemu_user,
    open_local_node,
    open_node,
    qemu_from_env,
    resolve_qemu_user,
)
from ukedge.host.agent._agent import Agent


def test_the_qemu_user_setting_reads_the_same_everywhere() -> None:
    assert resolve_qemu_user(None) == default_qemu_user()
    assert resolve_qemu_user("") is None
    assert resolve_qemu_user("root") == "root"
    with pytest.raises(UsageError, match=r"no such user 'no-such-user-x' .*--qemu-user"):
        resolve_qemu_user("no-such-user-x")


def test_the_qemu_setting_names_an_executable_or_fails_naming_itself(tmp_path: Path) -> None:
    assert qemu_from_env({}) is None
    assert qemu_from_env({"UKEDGE_QEMU": " "}) is None
    binary = tmp_path / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    with pytest.raises(UsageError, match=r"UKEDGE_QEMU=.*: no executable file there"):
        qemu_from_env({"UKEDGE_QEMU": str(binary)})  # not executable
    binary.chmod(0o755)
    assert qemu_from_env({"UKEDGE_QEMU": str(binary)}) == str(binary)
    for wrong in (tmp_path / "missing", tmp_path / "bin"):
        with pytest.raises(UsageError, match=r"UKEDGE_QEMU=.*make qemu-slim"):
            qemu_from_env({"UKEDGE_QEMU": str(wrong)})


def test_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UKEDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("UKEDGE_CACHE", str(tmp_path / "shared-cache"))
    local = NodeLayout.local()
    assert local.instances == tmp_path / "home" / "instances"
    assert local.store == tmp_path / "home" / "store"
    assert local.unpacked == tmp_path / "shared-cache" / "unpacked"
    assert not local.own_layers, "a shared cache may serve other stores"
    data = NodeLayout.data_dir(tmp_path / "agent")
    assert data.unpacked == tmp_path / "agent" / "cache" / "unpacked" and data.own_layers


def _record(node_id: str, digest: str) -> Instance:
    return Instance(
        id=node_id,
        name=f"n-{node_id}",
        image="app:1",
        image_digest=digest,
        state=InstanceState.EXITED,
        created_at=time.time(),
        memory_mib=64,
        vcpus=1,
        workdir="/tmp/x",
    )


def test_a_node_is_one_store_whose_images_in_use_are_the_records(tmp_path: Path) -> None:
    node = open_node(
        NodeLayout.data_dir(tmp_path),
        qemu_user="",
        budget=1 << 30,
        hub="http://hub.example:5000/",
        name="edge-1",
        labels={"zone": "a"},
    )
    assert node.cache.store is node.manager.store and node.cache.layers is node.manager.layers
    assert node.cache.store.root == tmp_path / "store"
    assert node.cache.budget == 1 << 30 and node.cache.own_layers
    assert (node.name, node.labels, node.hub) == ("edge-1", {"zone": "a"}, "hub.example:5000")
    assert list(node.cache.in_use()) == []
    digest = "sha256:" + "1" * 64
    node.manager.records.add(_record("abc123", digest))
    node.manager.records.add(_record("abd456", digest))
    assert list(node.cache.in_use()) == [digest, digest], "one entry per instance"


def test_the_cli_and_the_agent_wire_the_same_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UKEDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("UKEDGE_IMAGE_BUDGET", "1G")
    monkeypatch.delenv("UKEDGE_REGISTRY", raising=False)
    local = open_local_node()
    assert local.cache.budget == 1 << 30 and not local.cache.own_layers
    assert local.manager.store.root == tmp_path / "home" / "store"
    assert not local.manager.checks_health, "no supervisor outlives a daemonless command"
    agent = Agent(
        AgentSettings(data_dir=tmp_path / "agent", image_budget="2G", qemu_user="", name="edge-2")
    )
    try:
        assert agent.images is agent.node.cache and agent.manager is agent.node.manager
        assert agent.images.budget == 2 << 30 and agent.images.own_layers
        assert agent.manager.store.root == tmp_path / "agent" / "store"
        assert agent.manager.checks_health
        assert (tmp_path / "agent").stat().st_mode & 0o777 == 0o700
    finally:
        agent.close()
