"""Whether an instance record needs reconciling with its machine before anyone reads it.

The manager reconciles a record on every read (``_observe``): a machine that ended while nobody
watched makes its record ``exited`` or ``failed``, a start or stop whose process died is
finished. Most records need none of that: they have ended, or their machine runs just as
recorded. This is that test, on plain values and with the standard library only, and both the
manager and ``ukedge ps``'s model-free path ask it: a record it calls settled is read as stored,
any other goes through the manager's full observation.
"""

from __future__ import annotations

from pathlib import Path

from ukedge.host._states import InstanceState
from ukedge.host.instances._console import machine_paths
from ukedge.vmm import runs_as_recorded

__all__ = ["record_settled"]


def record_settled(state: InstanceState | str, pid: int | None, workdir: str | Path) -> bool:
    """True when reading the record would change nothing: it has ended, or it is starting or
    running and its machine is the live process ``pid``. (A ``stopping`` record whose stopper
    may have died, and one without a machine yet, need the manager's closer look.)"""
    state = InstanceState(state)
    if not state.active:
        return True
    if state is InstanceState.STOPPING or pid is None:
        return False
    return runs_as_recorded(machine_paths(Path(workdir)).workdir, pid)
