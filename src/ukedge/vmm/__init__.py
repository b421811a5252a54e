"""Hypervisor backends behind one interface (``base``), QEMU driven through QMP, and the
accelerator probe (KVM when it really works here, else TCG)."""

from ukedge.vmm._accel import AccelVerdict, probe_accelerator, qemu_version
from ukedge.vmm._registry import backends, create
from ukedge.vmm.base import (
    KILLED_STATUS,
    Machine,
    MachineBackend,
    MachineSpec,
    MachineState,
    MachineStats,
    MachineStatus,
    PortForward,
)

__all__ = [
    "KILLED_STATUS",
    "AccelVerdict",
    "Machine",
    "MachineBackend",
    "MachineSpec",
    "MachineState",
    "MachineStats",
    "MachineStatus",
    "PortForward",
    "backends",
    "create",
    "probe_accelerator",
    "qemu_version",
]
