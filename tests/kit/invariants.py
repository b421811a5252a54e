"""What must hold on a node whenever no operation is under way, checked from outside: after a
crash and the restarted agent's recovery (test_crash_points), after a fuzz run (test_fuzz_agent).

Reads the records as stored (no manager, which would repair what it reads) and every process
on the machine, so a check cannot be satisfied by the code it checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ukedge.host import Instance, InstanceState
from ukedge.host.instances._state import InstanceRecords
from ukedge.vmm import _proc

_TRANSITIONAL = (InstanceState.STARTING, InstanceState.STOPPING)


@dataclass(frozen=True)
class Qemu:
    pid: int
    #: The first path component under the instances root its command line names.
    owner: str


def qemus_under(root: Path) -> list[Qemu]:
    """Every live QEMU whose command line names a path under ``root``."""
    prefix = str(root.resolve()) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        argv = _proc.cmdline(pid)
        st = _proc.read_stat(pid)
        if not argv or st is None or st.state in ("Z", "X") or "qemu-system" not in argv[0]:
            continue
        owners = {
            piece[len(prefix) :].split("/", 1)[0]
            for arg in argv
            for piece in re.split(r"[,=]", arg)
            if piece.startswith(prefix)
        }
        for owner in owners:
            found.append(Qemu(pid, owner))
    return found


def host_problems(instances_root: Path, snapshots: Path | None = None) -> list[str]:
    """What is wrong on the node whose instances live under ``instances_root``: records in a
    transitional state, QEMUs no record adopts (two for one record, one for a removed or ended
    instance), half-made snapshots."""
    problems: list[str] = []
    records: dict[str, Instance] = {}
    if (instances_root / "state.db").exists():
        store = InstanceRecords(instances_root / "state.db")
        try:
            records = {i.id: i for i in store.all()}
        finally:
            store.close()
    for instance in records.values():
        if instance.state in _TRANSITIONAL:
            problems.append(f"instance {instance.name} is left {instance.state.value}")
    qemus = qemus_under(instances_root)
    by_owner: dict[str, list[int]] = {}
    for qemu in qemus:
        by_owner.setdefault(qemu.owner, []).append(qemu.pid)
    for owner, pids in sorted(by_owner.items()):
        record = records.get(owner)
        if record is None:
            problems.append(f"QEMU {pids} runs in {owner}, which no instance record owns")
        elif len(pids) > 1:
            problems.append(f"instance {record.name} has {len(pids)} QEMUs: {pids}")
        elif record.state is not InstanceState.RUNNING or record.pid != pids[0]:
            problems.append(
                f"QEMU {pids[0]} of instance {record.name} is not adopted "
                f"(record: {record.state.value}, pid {record.pid})"
            )
    if snapshots is not None and snapshots.is_dir():
        for path in snapshots.iterdir():
            if path.name.startswith("."):
                problems.append(f"half-written snapshot {path.name} left behind")
            elif not (path / "image").is_file():
                problems.append(f"snapshot {path.name} is incomplete")
    return problems
