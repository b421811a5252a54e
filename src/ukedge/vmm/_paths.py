"""The layout of a machine's work directory, part of the backend contract.

The host reads a machine's console and results by path (logs of earlier runs, the results spool
tailing the file), so a backend that kept them elsewhere would break logs and results silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MachinePaths"]

#: Longest Unix socket path we hand QEMU (``sun_path`` holds 107 bytes and a NUL).
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True, slots=True)
class MachinePaths:
    """The files of one machine inside its work directory.

    ``console`` and ``results`` are the part of the layout every backend keeps (the backend
    contract, :mod:`ukedge.vmm.base`): the host reads them without the machine, for earlier runs
    and after it ended. The rest is what the QEMU backend keeps beside them.
    """

    workdir: Path

    @property
    def state(self) -> Path:
        return self.workdir / "machine.json"

    @property
    def sockets(self) -> Path:
        """Where the Unix sockets go: the work directory, unless its path is too long for one.

        A socket path has at most 107 bytes (``sun_path``), and agents keep instances deep in
        their data directory; then the sockets live in a short per-user directory named by a
        hash of the work directory, so a restarted agent finds them again.
        """
        if len(str(self.workdir)) + len("/control.sock") <= _MAX_SOCKET_PATH:
            return self.workdir
        import hashlib
        import tempfile

        tag = hashlib.sha256(str(self.workdir).encode()).hexdigest()[:24]
        return Path(tempfile.gettempdir()) / f"ukedge-{os.getuid()}" / tag

    @property
    def qmp(self) -> Path:
        return self.sockets / "qmp.sock"

    @property
    def control(self) -> Path:
        return self.sockets / "control.sock"

    @property
    def incoming(self) -> Path:
        """Where a machine started with ``MachineSpec.incoming`` takes a live migration stream
        (a Unix socket: QEMU's incoming side never listens on the network)."""
        return self.sockets / "incoming.sock"

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    @property
    def results(self) -> Path:
        return self.workdir / "results.jsonl"

    @property
    def log(self) -> Path:
        return self.workdir / "qemu.log"

    @property
    def initrd(self) -> Path:
        return self.workdir / "initrd.img"

    @property
    def ram(self) -> Path:
        """Guest RAM of a snapshot template's source (``MachineSpec.template``)."""
        return self.workdir / "ram"
