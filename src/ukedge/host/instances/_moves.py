"""Moving instances between nodes, as the instance manager sees it: giving one up (source) and
taking one in (target). The protocol between the two agents is :mod:`ukedge.host.migration`'s.

Source: the move holds the instance's lock from start to end (:meth:`InstanceMoves.moving_out`),
so the supervisor leaves it alone (a paused guest fails its health checks, and its restart
policy must not kill it). A failed move resumes the machine (:meth:`thaw`); a committed one
stops it and removes the instance (:meth:`moved_out`), which drains its results into the spool
first, as every removal does.

Target: the incoming instance's directory is made and its operation lock held by the receiving
session; the machine boots (or resumes the state received) before any record exists, so until
the commit nothing on this node counts it: a crash before the commit leaves a directory without
a record, which the next agent's sweep of removed leftovers kills and deletes, and the source
runs on. The commit inserts the record with the source's id, name, restart count and health.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ukedge.errors import MachineError, MigrationError, UkedgeError
from ukedge.host._models import Instance, InstanceState, PortMapping
from ukedge.host._names import NAME_PATTERN
from ukedge.host.instances._console import keep_snapshot_console, machine_paths, read_console
from ukedge.host.instances._health import wait_healthy
from ukedge.host.instances._lifecycle import InstanceLifecycle
from ukedge.host.instances._oplock import holding
from ukedge.host.instances._plan import machine_spec
from ukedge.host.instances._ports import bindable_or_free, check_bindable, upstream_ports
from ukedge.vmm import Machine

log = logging.getLogger(__name__)

__all__ = ["InstanceMoves"]

#: In an instance's directory while a move of it may have its machine paused.
_MOVING = "moving"
_DIED = "the agent died mid-move; it runs on here"
#: Instance ids as ``create`` makes them (``secrets.token_hex(16)``).
_INSTANCE_ID = re.compile(r"^[0-9a-f]{32}\Z")


class InstanceMoves(InstanceLifecycle):
    """The manager's side of moves between nodes (a floor of
    :class:`~ukedge.host.InstanceManager`)."""

    # -- source ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def moving_out(self, key: str) -> Iterator[Instance]:
        """Hold ``key``'s instance for a move; refuses one that is not running."""
        instance_id = self.records.find(key).id
        with self._lock(instance_id):
            instance = self.get(instance_id)
            if instance.state is not InstanceState.RUNNING:
                raise MigrationError(
                    f"instance {instance.name} is {instance.state.value}; only a running "
                    "instance moves (start it first, or run it on the other node; an idle "
                    "on-demand one has no state to move)",
                    "prepare",
                )
            yield instance

    def freeze(self, instance: Instance, path: Path) -> None:
        """Pause the instance's machine and save its whole state into ``path``."""
        self.mark_moving(instance, "frozen")
        self._machine(instance).snapshot(path, resume=False)

    def thaw(self, instance: Instance) -> None:
        """Let a frozen machine run on (the move failed or was cancelled)."""
        self._machine(instance).resume()
        self.mark_moving(instance, None)

    def mark_moving(self, instance: Instance, phase: str | None) -> None:
        """Record on disk where a move of the instance is (``frozen``: its machine may be
        paused; ``stopped``: a cold move stopped it; ``committing``: the target may own it
        now), or that none is (None), so an
        agent killed mid-move can be finished by the next one (:meth:`recover_moves`)."""
        marker = Path(instance.workdir) / _MOVING
        if phase is None:
            marker.unlink(missing_ok=True)
            return
        staging = marker.with_suffix(".tmp")
        staging.write_text(phase)
        staging.replace(marker)

    def recover_moves(self) -> list[str]:
        """Finish what moves a killed agent left: a machine it froze before the commit is let
        run (the target aborted when the channel broke); one frozen while the commit was on
        its way stays paused, since the target may run it now, and is logged for the operator;
        one a cold move stopped is started again. Returns the names resumed."""
        resumed = []
        for record in self.records.all():
            marker = Path(record.workdir) / _MOVING
            try:
                phase = marker.read_text().strip()
            except FileNotFoundError:
                continue
            instance = self.get(record.id)
            if phase == "stopped":  # a cold move stopped it before the target had it
                marker.unlink(missing_ok=True)
                if not instance.state.active:
                    try:
                        self.start(instance.id)
                    except UkedgeError as exc:
                        log.warning("instance %s: restart after a dead move: %s", record.name, exc)
                        continue
                    self._emit(
                        instance, "migrate-failed", instance.state, "the agent died mid-move"
                    )
                    resumed.append(instance.name)
                continue
            if not instance.state.active:
                marker.unlink(missing_ok=True)
                continue
            if phase != "frozen":
                log.error(
                    "instance %s was being moved when the agent died, after the commit was sent: "
                    "its machine stays paused here; if the target runs it, remove it here, "
                    "else resume it (ukedge migrate again, or stop and start it)",
                    instance.name,
                )
                continue
            try:
                self.thaw(instance)
            except UkedgeError as exc:
                log.warning(
                    "instance %s: resuming after a dead move failed: %s", instance.name, exc
                )
                continue
            self._emit(instance, "migrate-failed", instance.state, _DIED)
            resumed.append(instance.name)
        return resumed

    def migrate_live(
        self,
        instance: Instance,
        fd: int,
        *,
        downtime_limit_ms: int,
        auto_converge: bool,
        postcopy: bool = False,
        on_postcopy: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Live-migrate the instance's machine into ``fd``; it is paused here once done."""
        return self._machine(instance).migrate_to(
            fd,
            downtime_limit_ms=downtime_limit_ms,
            auto_converge=auto_converge,
            postcopy=postcopy,
            on_postcopy=on_postcopy,
        )

    def entered_postcopy(self, instance: Instance, target: str) -> None:
        """The move switched to post-copy: the guest's memory is split between here and the
        target from now on, so a failure can no longer give it back here."""
        self._emit(
            instance,
            "migrate-postcopy",
            instance.state,
            f"entered post-copy to {target}: a failure from here on loses the instance",
        )

    def console_bytes(self, instance: Instance) -> bytes:
        """Every run's console as one stream (what ``logs`` shows), to carry along."""
        return b"".join(read_console(Path(instance.workdir), 0))

    def moved_out(self, instance: Instance, target: str, *, graceful: bool) -> None:
        """The target runs the instance now: end it here and remove it (inside
        :meth:`moving_out`). ``graceful`` asks the app to end (cold moves); a frozen machine
        is killed."""
        self._emit(instance, "migrate-out", instance.state, f"moved to {target}")
        self._set(instance.id, stopped_by_user=True, restart_at=None)
        machine = self._machine(instance)
        with contextlib.suppress(MachineError):
            if graceful:
                machine.stop()
            else:
                machine.kill()
        self.remove(instance.id, force=True)

    def lost_in_postcopy(self, instance: Instance, detail: str) -> None:
        """A post-copy move failed after its switch: the machine here holds only part of the
        guest's memory and must never run again; kill it (the supervisor then treats it as a
        machine that died, and its restart policy boots it afresh)."""
        self.mark_moving(instance, None)
        with contextlib.suppress(MachineError):
            self._machine(instance).kill()
        self._emit(instance, "migrate-failed", instance.state, detail)

    def move_failed(self, instance: Instance, detail: str) -> None:
        self._emit(instance, "migrate-failed", instance.state, detail)

    # -- target ----------------------------------------------------------------------------------

    def incoming(
        self, record: Instance, ports: list[PortMapping], *, free_ports: bool = False
    ) -> Instance:
        """The record an instance moved here would get, checked against this node: its image
        is here, the id and name are free, there is room, the host ports are free (with
        ``free_ports``, a port that is not is published on a free one instead)."""
        # The record comes from another node: its id names a directory here.
        if not _INSTANCE_ID.match(record.id) or not NAME_PATTERN.match(record.name):
            raise MigrationError(
                f"the instance sent has an invalid id or name ({record.id!r}, {record.name!r})",
                "prepare",
            )
        for other in self.records.all():
            if other.id == record.id or other.name == record.name:
                raise MigrationError(
                    f"this node already has an instance {other.name} ({other.id[:12]}); "
                    "remove it or move another one",
                    "prepare",
                )
        candidate = record.model_copy(
            update={
                "workdir": str(self.root / record.id),
                "ports": bindable_or_free(ports) if free_ports else ports,
                "upstream_ports": [],
                "pid": None,
            }
        )
        self._plan(candidate.image_digest, candidate)  # the image is here (ImageError if not)
        self._guard(candidate, self.records.all())
        check_bindable(candidate.ports)
        return candidate

    @contextlib.contextmanager
    def receiving(self, candidate: Instance) -> Iterator[Path]:
        """Make the incoming instance's directory and hold its operation lock (so a sweep in
        another process leaves it alone); refuses a directory a leftover still holds."""
        workdir = Path(candidate.workdir)
        try:
            workdir.mkdir(mode=0o700)
        except FileExistsError:
            raise MigrationError(
                f"{workdir} exists: a leftover of an earlier move of {candidate.name}; it goes "
                "at the next agent start (or remove it)",
                "prepare",
            ) from None
        with holding(workdir):
            yield workdir

    def boot_incoming(
        self,
        candidate: Instance,
        *,
        restore_from: Path | None,
        results: Path | None,
        console: Path | None,
        healthy_timeout_s: float = 120.0,
        live: bool = False,
    ) -> tuple[Instance, Machine]:
        """Start the incoming instance's machine (resumed from ``restore_from``; waiting for a
        live stream with ``live``; else booted and waited for until healthy) with the results
        and console it brought along. Records nothing: :meth:`commit_incoming` does,
        :meth:`abort_incoming` undoes this."""
        workdir = Path(candidate.workdir)
        plan = self._plan(candidate.image_digest, candidate)
        check = plan.config.healthcheck
        paths = machine_paths(workdir)
        paths.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if results is not None:
            results.replace(paths.results)
        if console is not None:
            keep_snapshot_console(workdir, console)
        upstream = upstream_ports(candidate, check)
        # An on-demand instance's published TCP ports are its proxy's, not QEMU's (as in _boot).
        published = [
            p for p in candidate.ports if not (candidate.on_demand and p.protocol == "tcp")
        ]
        spec = machine_spec(plan, candidate.id, workdir, [*published, *upstream], restore_from)
        if restore_from is not None:
            self.backend.adopt_snapshot(restore_from, spec)
        if live:
            spec = dataclasses.replace(spec, incoming=True)
        machine = self.backend.start(spec)
        update: dict[str, object] = {
            "state": InstanceState.RUNNING,
            "pid": machine.pid,
            "upstream_ports": upstream,
            "stopped_by_user": False,
            "restart_at": None,
            "exit_code": None,
            "error": None,
            "finished_at": None,
        }
        if restore_from is None and not live:
            update.update(
                started_at=time.time(),
                restored=False,
                health=self._initial_health(check),
                health_failures=0,
                healthy_at=None,
                runs=candidate.runs + 1,
            )
        else:
            update["restored"] = True
        instance = candidate.model_copy(update=update)
        if restore_from is None and not live and check is not None:
            try:
                host, port = self.upstream(instance, check.port)
                wait_healthy(
                    check,
                    host,
                    port,
                    timeout=healthy_timeout_s,
                    alive=lambda: not machine.state.final,
                )
            except BaseException:
                with contextlib.suppress(UkedgeError):
                    machine.kill()
                raise
            instance = instance.model_copy(update={"healthy_at": time.time()})
        return instance, machine

    def incoming_socket(self, instance: Instance) -> Path:
        """Where the machine of a live move takes its stream (a Unix socket)."""
        return machine_paths(Path(instance.workdir)).incoming

    def accept_postcopy(self, machine: Machine) -> None:
        """Let the incoming machine take a post-copy stream (before the stream starts)."""
        machine.accept_postcopy()

    def finish_live_incoming(
        self,
        machine: Machine,
        *,
        results: Path | None,
        console: Path | None,
        timeout: float = 120.0,
    ) -> str | None:
        """Once the live stream is loaded (the guest paused here; in post-copy, its device
        state sent at the switch): put the results the guest wrote at the source before the
        ones it will write here, keep its console, let it run. Returns the incoming
        migration's status as QEMU saw it once the guest ran (``postcopy-active``: the rest
        of its RAM was still arriving), or None where QEMU did not say."""
        machine.wait_incoming(timeout)
        if results is not None:
            with results.open("rb") as src, machine.results_path.open("ab") as dst:
                shutil.copyfileobj(src, dst)
        if console is not None:
            keep_snapshot_console(machine.workdir.parent, console)
        machine.resume()
        try:
            return machine.incoming_status()
        except UkedgeError as exc:
            log.info("%s: its incoming migration's status: %s", machine.machine_id, exc)
            return None

    def commit_incoming(self, instance: Instance, source: str, *, note: str = "") -> Instance:
        """Record the moved instance: from here on this node runs it."""
        self.records.add(instance, guard=self._guard)
        self._emit(instance, "migrate-in", None, f"moved from {source}{note}")
        return instance

    def abort_incoming(self, workdir: Path, machine: Machine | None) -> None:
        """Undo :meth:`boot_incoming` (and the received files): nothing of the move stays."""
        if machine is not None:
            with contextlib.suppress(UkedgeError):
                machine.kill()
        shutil.rmtree(workdir, ignore_errors=True)
