"""Hypervisor backends behind one interface (``base``), QEMU driven through QMP, and the
accelerator probe (KVM when it really works here, else TCG); the layout of a machine's work
directory (``MachinePaths``).

Every name loads with its module on first use: ``ukedge ps`` asks whether a machine still runs
(``_liveness``, the standard library only) without importing the backend or its models.
"""

import typing

from ukedge._lazy import lazy_exports

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
    "runs_as_recorded",
]

if typing.TYPE_CHECKING:
    from ukedge.vmm._accel import (
        AccelVerdict,
        accelerator_for,
        accelerators,
        probe_accelerator,
        qemu_binary,
        qemu_version,
    )
    from ukedge.vmm._liveness import runs_as_recorded
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

_LAZY = {
    **dict.fromkeys(
        [
            "AccelVerdict",
            "accelerator_for",
            "accelerators",
            "probe_accelerator",
            "qemu_binary",
            "qemu_version",
        ],
        "ukedge.vmm._accel",
    ),
    "MachinePaths": "ukedge.vmm._paths",
    "runs_as_recorded": "ukedge.vmm._liveness",
    "backends": "ukedge.vmm._registry",
    "create": "ukedge.vmm._registry",
    **dict.fromkeys(
        [
            "KILLED_STATUS",
            "Machine",
            "MachineBackend",
            "MachineSpec",
            "MachineState",
            "MachineStats",
            "MachineStatus",
        ],
        "ukedge.vmm.base",
    ),
}

__getattr__ = lazy_exports(globals(), _LAZY)
