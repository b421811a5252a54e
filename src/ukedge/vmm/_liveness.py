"""Whether a QEMU machine still runs as its record says, from its work directory alone.

Reading an instance reconciles its record with its machine (``host.instances._observe``), and
for a machine that runs there is nothing to reconcile. This is that check, cheap and with the
standard library only, so ``ukedge ps`` can make it without loading the backend, QMP or any
model; whatever it cannot confirm goes through the backend's full observation.
"""

from __future__ import annotations

import json
from pathlib import Path

from ukedge.vmm import _proc
from ukedge.vmm._paths import MachinePaths

__all__ = ["STATE_VERSION", "runs_as_recorded"]

#: The layout version of a QEMU machine's ``machine.json``.
STATE_VERSION = 1


def runs_as_recorded(workdir: Path, pid: int) -> bool:
    """True when the QEMU machine in ``workdir`` is process ``pid`` (its start time and command
    line, as :meth:`attach` adopts one), alive and with no final status recorded: observing it
    would change nothing. False says only "look closer"."""
    paths = MachinePaths(Path(workdir).resolve())
    try:
        record = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return False
    if (
        not isinstance(record, dict)
        or record.get("backend") != "qemu"
        or record.get("version") != STATE_VERSION
        or record.get("pid") != pid
        or record.get("final")
    ):
        return False
    starttime = int(record.get("starttime", 0))
    return _proc.same_process(pid, starttime, str(paths.qmp)) and _proc.is_alive(pid, starttime)
