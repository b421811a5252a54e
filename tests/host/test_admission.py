"""Admission control: what a node commits, and refusals that say what to do."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ukedge.errors import AdmissionError, UsageError
from ukedge.host import Instance, InstanceState
from ukedge.host.instances._admission import (
    Capacity,
    Committed,
    admit,
    committed,
    host_capacity,
    host_reserve_bytes,
)

MIB = 1 << 20
GIB = 1 << 30


def _instance(name: str, state: InstanceState, memory: int, **extra: object) -> Instance:
    return Instance.model_validate(
        {
            "id": name * 4,
            "name": name,
            "image": "app:1",
            "image_digest": "sha256:" + "0" * 64,
            "state": state,
            "created_at": time.time(),
            "memory_mib": memory,
            "vcpus": 1,
            "workdir": "/nonexistent",
            **extra,
        }
    )


def test_committed_counts_active_on_demand_and_pending_restarts() -> None:
    instances = [
        _instance("run", InstanceState.RUNNING, 64),
        _instance("stop", InstanceState.STOPPING, 32),
        _instance("zero", InstanceState.CREATED, 128, on_demand=True),
        _instance("idle", InstanceState.EXITED, 16, on_demand=True),
        _instance("back", InstanceState.FAILED, 8, restart_at=time.time() + 1),
        _instance("done", InstanceState.EXITED, 1024),
        _instance("new", InstanceState.CREATED, 2048),
    ]
    total = committed(instances)
    assert total == Committed(memory_bytes=(64 + 32 + 128 + 16 + 8) * MIB, vcpus=5, instances=5)


def test_admit_within_capacity_and_at_the_edge() -> None:
    capacity = Capacity(memory_allocatable_bytes=GIB, cpus=2)
    admit(capacity, Committed(memory_bytes=GIB - 128 * MIB, vcpus=1, instances=3), "x", 128, 1)


def test_refusal_names_the_numbers_and_what_to_do() -> None:
    capacity = Capacity(memory_allocatable_bytes=GIB, cpus=8)
    used = Committed(memory_bytes=GIB - 96 * MIB, vcpus=1, instances=7)
    with pytest.raises(AdmissionError) as refused:
        admit(capacity, used, "web", 128, 1)
    message = str(refused.value)
    assert "node cannot take instance web (128 MiB, 1 vCPU)" in message
    assert "96 MiB of 1.0 GiB allocatable memory left at over-commit 1" in message
    assert "--overcommit" in message and "lower --memory" in message


def test_vcpus_are_admitted_too_and_overcommit_applies_to_both() -> None:
    capacity = Capacity(memory_allocatable_bytes=GIB, cpus=2)
    used = Committed(memory_bytes=0, vcpus=2, instances=2)
    with pytest.raises(AdmissionError, match="0 of 2 allocatable vCPUs left"):
        admit(capacity, used, "a", 16, 1)
    doubled = Capacity(memory_allocatable_bytes=GIB, cpus=2, overcommit_ratio=2.0)
    admit(doubled, used, "a", 16, 2)
    admit(doubled, Committed(memory_bytes=GIB, vcpus=0, instances=9), "b", 1024, 1)
    with pytest.raises(AdmissionError, match="memory left at over-commit 2"):
        admit(doubled, Committed(memory_bytes=GIB, vcpus=0, instances=9), "b", 1025, 1)


def test_bad_capacity_is_refused() -> None:
    with pytest.raises(UsageError, match="over-commit ratio"):
        Capacity(memory_allocatable_bytes=GIB, cpus=1, overcommit_ratio=0)


def test_host_capacity_keeps_a_reserve(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:         1000 kB\n")
    capacity = host_capacity(1.5, meminfo=meminfo)
    total = 16384000 * 1024
    assert capacity.memory_allocatable_bytes == total - total // 10
    assert capacity.overcommit_ratio == 1.5
    assert capacity.cpus >= 1
    assert host_reserve_bytes(GIB) == 512 * MIB, "small hosts keep at least 512 MiB"
    real = host_capacity()
    assert real.memory_allocatable_bytes > 0
