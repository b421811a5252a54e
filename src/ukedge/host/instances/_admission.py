"""Admission control: whether a node has room for one more instance.

A node commits each active instance's guest memory and vCPUs (plus on-demand instances while
scaled to zero, since they must be able to boot when a request comes, and instances waiting for
a policy restart). An instance is admitted only while the committed totals stay within what is
allocatable times the over-commit ratio. Guest memory is what QEMU may touch, not what it has
touched: with a ratio above 1 the node bets that guests do not all fill their memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ukedge.errors import AdmissionError, UsageError
from ukedge.host._models import Instance

__all__ = [
    "Capacity",
    "Committed",
    "admit",
    "committed",
    "holds_resources",
    "host_capacity",
    "host_reserve_bytes",
]

_MIB = 1 << 20
#: Memory kept for the host itself (the agent, page cache, QEMU's own overhead): at least this…
_RESERVE_MIN = 512 * _MIB
#: …or this share of the total, whichever is larger.
_RESERVE_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class Capacity:
    """What instances on a node may use."""

    memory_allocatable_bytes: int
    #: vCPUs allocatable to guests.
    cpus: int
    #: How far committed memory and vCPUs may exceed the allocatable figures (1.0: not at all).
    overcommit_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.memory_allocatable_bytes < 0 or self.cpus < 0:
            raise UsageError("allocatable memory and CPUs must not be negative")
        if not 0 < self.overcommit_ratio <= 100:
            raise UsageError(f"over-commit ratio must be in (0, 100], got {self.overcommit_ratio}")

    @property
    def memory_limit_bytes(self) -> int:
        return int(self.memory_allocatable_bytes * self.overcommit_ratio)

    @property
    def vcpu_limit(self) -> int:
        return int(self.cpus * self.overcommit_ratio)


@dataclass(frozen=True, slots=True)
class Committed:
    """Guest memory and vCPUs the node has promised to its instances."""

    memory_bytes: int = 0
    vcpus: int = 0
    instances: int = 0


def holds_resources(instance: Instance) -> bool:
    """Counts against the node's capacity: running, waiting for a policy restart, or on demand
    (it must be able to boot whenever a request comes)."""
    return instance.state.active or instance.on_demand or instance.restart_at is not None


def committed(instances: Sequence[Instance]) -> Committed:
    """Guest memory and vCPUs the node has promised to ``instances``."""
    holding = [i for i in instances if holds_resources(i)]
    return Committed(
        memory_bytes=sum(i.memory_mib for i in holding) * _MIB,
        vcpus=sum(i.vcpus for i in holding),
        instances=len(holding),
    )


def _size(n: int) -> str:
    """Binary units, as memory sizes are given (``--memory 96M`` is 96 MiB)."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n // _MIB} MiB"


def host_reserve_bytes(total: int) -> int:
    return max(_RESERVE_MIN, int(total * _RESERVE_SHARE))


def host_capacity(
    overcommit_ratio: float = 1.0, *, meminfo: Path = Path("/proc/meminfo")
) -> Capacity:
    """This host's figures: MemTotal less the host reserve, and every CPU."""
    total = 0
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
            break
    return Capacity(
        memory_allocatable_bytes=max(0, total - host_reserve_bytes(total)),
        cpus=os.cpu_count() or 1,
        overcommit_ratio=overcommit_ratio,
    )


def admit(capacity: Capacity, committed: Committed, name: str, memory_mib: int, vcpus: int) -> None:
    """Raise :class:`AdmissionError` unless ``name`` fits beside what is ``committed``."""
    memory = memory_mib * _MIB
    memory_left = capacity.memory_limit_bytes - committed.memory_bytes
    vcpus_left = capacity.vcpu_limit - committed.vcpus
    ratio = f"{capacity.overcommit_ratio:g}"
    what = f"instance {name} ({memory_mib} MiB, {vcpus} vCPU{'s' if vcpus != 1 else ''})"
    if memory > memory_left:
        raise AdmissionError(
            f"node cannot take {what}: {_size(max(0, memory_left))} of "
            f"{_size(capacity.memory_limit_bytes)} allocatable memory left at "
            f"over-commit {ratio} ({committed.instances} instances hold "
            f"{_size(committed.memory_bytes)}); stop or remove an instance, lower "
            "--memory, or raise --overcommit"
        )
    if vcpus > vcpus_left:
        raise AdmissionError(
            f"node cannot take {what}: {max(0, vcpus_left)} of {capacity.vcpu_limit} allocatable "
            f"vCPUs left at over-commit {ratio} ({committed.instances} instances hold "
            f"{committed.vcpus}); stop or remove an instance, lower --cpus, or raise --overcommit"
        )
