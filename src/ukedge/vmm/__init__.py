"""Hypervisor backends behind one interface (``base``), QEMU driven through QMP, and the
accelerator probe (KVM when it really works here, else TCG); the layout of a machine's work
directory (``MachinePaths``)."""

from ukedge.vmm._accel import (
    AccelVerdict,
    accelerator_for,
    accelerators,
    probe_accelerator,
    qemu_binary,
    qemu_version,
)
from ukedge.vmm._paths import MachinePaths
from ukedge.vmm._registry import backends, create
from ukedge.vmm.base import (
    KILLED_STATUS,
    Machine,
    MachineBackend,
    MachineSpec,
    MachineState,
    MachineStats,
    MachineStatus,
)

__all__ = [
    "KILLED_STATUS",
    "AccelVerdict",
    "Machine",
    "MachineBackend",
    "MachinePaths",
    "MachineSpec",
    "MachineState",
    "MachineStats",
    "MachineStatus",
    "accelerator_for",
    "accelerators",
    "backends",
    "create",
    "probe_accelerator",
    "qemu_binary",
    "qemu_version",
]
