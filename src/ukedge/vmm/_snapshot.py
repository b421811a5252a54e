"""Machine snapshots for the QEMU backend: save a running machine, start others from it.

Apps whose user-space start is slow under TCG (a Python runtime importing its modules) can
skip it: boot one machine until the app is ready, save it, and start later machines from the
saved state with ``-incoming``. The state goes through QMP ``migrate`` to a file descriptor
passed with SCM_RIGHTS, since the sandbox forbids QEMU to spawn ``exec:`` helpers and QEMU 7.2
has no ``file:`` migration URI.

A snapshot is a directory: ``vmstate`` (QEMU's migration stream) and ``snapshot.json`` (what
it was made from; a restore with other memory, vCPUs, machine type or kernel is refused, since
QEMU would fail late and obscurely). Host-side settings may differ on restore: port forwards,
work directory, the console and results files.

``start`` of a restored machine returns only once QEMU has loaded the state and runs the
guest (~0.2 s): QEMU listens on the forwarded ports from the beginning, and a connection
accepted while the incoming state is loaded is lost when the network state is replaced by
the saved one (the client hangs until its timeout). Boots from scratch never wait like this.

Restored machines are clones. Right after a restore the backend writes the resume message
(``ukedge.guest.resume_message``: ``time``, ``seed``, ``hostname``, ``resumed``) on the
guest's control port, so the guest clock is current (it stood still in the snapshot), its
kernel RNG is reseeded, it has its own hostname (the MAC stays the snapshot's: see
``_QemuMachine._refresh_clone``), and the app's runtime is told
to reseed its own generators; until those lines are read (milliseconds) every clone has the
snapshot's state, so an app must not draw secrets before it serves. Guests without the control
port keep the snapshot's clock, RNG and hostname (a warning is logged).

Copy-on-write templates (``QemuOptions.template_snapshots``, machines started with
``MachineSpec.template``): the source's RAM is a shared file in its work directory; ``save``
migrates with ``x-ignore-shared`` (``vmstate`` then holds device state only) and hard-links the
RAM file into the snapshot as ``ram``. Clones map ``ram`` privately (MAP_PRIVATE): unchanged
pages are one copy in the page cache for all of them, and their writes never reach the file.
Nothing writes into a snapshot's files after it is complete: a new snapshot is a new
directory renamed into place, and a removed one stays on disk, unlinked, until the last clone
that maps it ends.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from ukedge.errors import UsageError
from ukedge.vmm import _qmp
from ukedge.vmm._migrate import BANDWIDTH, completed, ignore_shared
from ukedge.vmm._qemu_argv import QemuOptions, RamFile, disk_bus, ram_bytes
from ukedge.vmm.base import MachineSpec

_VERSION = 1
_META = "snapshot.json"
_STATE = "vmstate"
_RAM = "ram"


def state_file(path: Path) -> Path:
    return Path(path) / _STATE


def template_ram(path: Path) -> RamFile | None:
    """How a clone of the snapshot at ``path`` maps its RAM: privately from the template's RAM
    file, or None for a snapshot whose stream carries the RAM."""
    ram = Path(path) / _RAM
    return RamFile(ram, shared=False) if ram.is_file() else None


async def load_template(session: _qmp.Session) -> None:
    """Start loading a template's device state into a clone started with ``-incoming defer``
    (the capability must be set on both ends, and QEMU has no option for it)."""
    await session.execute("migrate-set-capabilities", {"capabilities": [ignore_shared(True)]})
    await session.execute("migrate-incoming", {"uri": "fd:3"})


def _fingerprint(spec: MachineSpec, options: QemuOptions, accel: str) -> dict[str, Any]:
    """What must be equal between the saved machine and a restored one."""
    kernel = spec.kernel.resolve()
    st = kernel.stat()
    # x86_64 leaves its (default) architecture out: snapshots saved before it existed still fit.
    arch = {} if spec.architecture == "x86_64" else {"architecture": spec.architecture}
    return {
        **arch,
        "machine": options.machine,
        "accel": accel,
        "cpu": options.cpu,
        "memory_mib": spec.memory_mib,
        # With its pad (RAM_PAD): a snapshot saved without it does not fit.
        "ram_bytes": ram_bytes(spec),
        "vcpus": spec.vcpus,
        "kernel": {"path": str(kernel), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        "balloon": options.balloon,
        # The read-only disk (the shared runtime image) is not in the stream: a restore maps
        # the host's own copy, which must hold the same bytes. Its name is the runtime layer's
        # digest, so name and size say so without reading it.
        "disk": _disk_id(spec, options),
    }


def _disk_id(spec: MachineSpec, options: QemuOptions) -> dict[str, Any] | None:
    if spec.disk is None:
        return None
    return {
        "name": spec.disk.name,
        "size": spec.disk.stat().st_size,
        "bus": disk_bus(options, spec),
    }


class SavedMachine(Protocol):
    """What :func:`save` reads of a QEMU machine (the backend's machine type imports this
    module, so it is described here rather than imported back)."""

    @property
    def machine_id(self) -> str: ...
    @property
    def spec(self) -> MachineSpec: ...
    @property
    def accel(self) -> str: ...
    @property
    def options(self) -> QemuOptions: ...
    @property
    def qmp_path(self) -> Path: ...
    @property
    def shared_ram(self) -> Path | None: ...


def save(machine: SavedMachine, path: Path, *, resume: bool) -> None:
    """Migrate ``machine``'s state into ``path``/vmstate (QEMU pauses it for the final pass)
    and record what it was made from; a template source's RAM file becomes ``path``/ram."""
    options = machine.options
    shared_ram = machine.shared_ram
    meta = {
        "version": _VERSION,
        "backend": "qemu",
        "machine_id": machine.machine_id,
        "created_at": time.time(),
        "fingerprint": _fingerprint(machine.spec, options, machine.accel),
    }
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path / f".{_STATE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    started = time.monotonic()
    try:

        async def body(session: _qmp.Session) -> None:
            session.send_fd(fd)
            await session.execute("getfd", {"fdname": "ukedge-snapshot"})
            # No "stop" first: the stream records the run state at the final pause, and only a
            # running source makes restored machines start by themselves (no QMP round trip).
            await session.execute("migrate-set-parameters", {"max-bandwidth": BANDWIDTH})
            await session.execute(
                "migrate-set-capabilities",
                {"capabilities": [ignore_shared(shared_ram is not None)]},
            )
            await session.execute("migrate", {"uri": "fd:ukedge-snapshot"})
            await completed(session, machine.machine_id, "snapshot")
            if shared_ram is not None:
                # Paused now, so the file holds exactly the RAM the stream's devices expect.
                _keep_ram(shared_ram, path / _RAM, copy=resume)
            if resume:
                await session.execute("cont")

        _qmp.run(machine.qmp_path, body, machine_id=machine.machine_id, timeout=60.0)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        if shared_ram is not None:
            (path / _RAM).unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(state_file(path))
    meta["ram"] = "template" if shared_ram is not None else "stream"
    meta["seconds"] = round(time.monotonic() - started, 3)
    meta["bytes"] = state_file(path).stat().st_size
    _write_meta(path, meta)


def adopt(path: Path, spec: MachineSpec, options: QemuOptions, accel: str) -> None:
    """Make a snapshot another node made and sent (``path`` holds its vmstate and its
    snapshot.json) one that restores ``spec`` here. Everything the guest sees must be equal
    (memory, vCPUs, machine type, CPU model, accelerator, balloon); the kernel's path and
    mtime are this node's own (the caller vouches for its content: same image digest)."""
    try:
        sent = json.loads((path / _META).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a machine snapshot ({_META}: {exc})") from None
    _require_complete(path, sent)
    want = _fingerprint(spec, options, accel)
    diffs = _differences(sent, want, ("sender", "here"), skip="kernel")
    if diffs:
        raise UsageError(
            f"the machine state sent to {path} cannot resume here; run both nodes with the "
            f"same QEMU settings ({'; '.join(diffs)})"
        )
    _write_meta(path, {**sent, "fingerprint": want, "adopted_at": time.time()})


def _require_complete(path: Path, meta: dict[str, Any]) -> None:
    if meta.get("version") != _VERSION or not state_file(path).is_file():
        raise UsageError(f"{path} is not a complete version-{_VERSION} machine snapshot")


def _differences(
    meta: dict[str, Any], want: dict[str, Any], labels: tuple[str, str], skip: str = ""
) -> list[str]:
    """Each fingerprint entry the snapshot's record (``meta``) has other than ``want``, as
    "key: <recorded> <value>, <wanted> <value>" (``labels`` name the two sides)."""
    have = meta.get("fingerprint", {})
    theirs, ours = labels
    return [
        f"{k}: {theirs} {have.get(k)!r}, {ours} {v!r}"
        for k, v in want.items()
        if k != skip and have.get(k) != v
    ]


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write the snapshot's record under a temporary name and rename it into place, so a
    reader never sees a half-written one."""
    meta_tmp = path / f".{_META}.tmp"
    meta_tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    meta_tmp.replace(path / _META)


def _keep_ram(source: Path, target: Path, *, copy: bool) -> None:
    """Make the paused source's RAM file the snapshot's: a hard link when the source ends
    after the save (it never writes again), a copy when it resumes (it would write into the
    template under every clone)."""
    target.unlink(missing_ok=True)
    if not copy:
        try:
            os.link(source, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
    tmp = target.with_name(f".{_RAM}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)


def check_compatible(spec: MachineSpec, options: QemuOptions, accel: str) -> None:
    """Refuse (UsageError) to restore ``spec`` from a snapshot made of a different machine."""
    assert spec.restore_from is not None
    path = spec.restore_from
    try:
        meta = json.loads((path / _META).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} is not a machine snapshot (no {_META})") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read snapshot {path}: {exc}") from exc
    _require_complete(path, meta)
    diffs = _differences(meta, _fingerprint(spec, options, accel), ("snapshot", "now"))
    if diffs:
        raise UsageError(
            f"snapshot {path} was made of a different machine; start it with the same "
            f"settings or make a new snapshot ({'; '.join(diffs)})"
        )
    # A file cut short (or not QEMU's) would fail the restore late and obscurely.
    ram = template_ram(path)
    if ram is not None and ram.path.stat().st_size != ram_bytes(spec):
        raise UsageError(
            f"snapshot {path} has a RAM file of {ram.path.stat().st_size} bytes, not the "
            f"{ram_bytes(spec)} of its machine ({spec.memory_mib} MiB and a pad); make a new "
            "snapshot"
        )
