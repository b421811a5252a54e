"""The source side of a move: one thread drives it from the offer to the removal of the source.

The instance stays locked for the whole move (see :mod:`ukedge.host.instances._moves`). Until the
target has answered ``committed`` every failure, and a cancel, gives the source back: a frozen
machine is resumed, a stopped one (cold move) started again, and the target is told to abort.
The one exception is a channel lost between ``commit`` and ``committed``: the source then asks
the target (a reconnect with its ticket) and, if it cannot learn the outcome, leaves its machine
paused rather than risk two running copies; the error says so.

Long on purpose: one class, one move's state machine; the steps (connect, transfer or live
stream, commit, give back) share the channel, the lock and the give-back rule, and split apart
they would each need all three.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import logging
import queue
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ukedge.errors import MigrationError, UkedgeError
from ukedge.host._models import Instance, PortMapping
from ukedge.host.migration._channel import Channel, connect
from ukedge.host.migration._models import MigrateRequest, MigrationStatus
from ukedge.host.migration._pace import PROBE_BYTES, Pace
from ukedge.host.migration._protocol import (
    CHUNK_BYTES,
    Frame,
    Mode,
    MoveState,
    Step,
    encode_chunk,
)

if TYPE_CHECKING:
    from ukedge.host.instances import InstanceManager
    from ukedge.host.results import ResultSpool

__all__ = ["OutgoingMove"]

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10.0
#: Reconnects tried when the channel breaks during the transfer (resuming where it broke), or
#: after a commit whose answer was lost.
_RECONNECTS = 3
_RECONNECT_PAUSE_S = (0.5, 1.0, 2.0)
#: Bytes a live stream (or a snapshot whose compression is chosen by the link's measured rate)
#: may have queued in each kernel buffer on its way out.
_LIVE_BUFFER = 256 << 10
#: Bytes each buffer on the way out may hold after a post-copy switch: a page the target asks
#: for queues behind them (at 20 Mbit/s, 256 KiB is 0.1 s per page the guest waits for).
_POSTCOPY_BUFFER = 32 << 10
#: How long a post-copy move's return path may stay quiet (it is, for all of pre-copy).
_BACK_IDLE_S = 24 * 3600.0
#: How long the target may take to run a post-copy move's guest, or to commit it.
_ANSWER_TIMEOUT_S = 120.0
#: Threads compressing chunks ahead of the one being sent.
_COMPRESSORS = 2


class _Cancelled(Exception):
    pass


class OutgoingMove:
    """One move of an instance of this node to the node that made ``request.offer``."""

    def __init__(
        self,
        manager: InstanceManager,
        spool: ResultSpool | None,
        node_name: str,
        migration: str,
        instance: Instance,
        request: MigrateRequest,
        on_change: Callable[[MigrationStatus], None] | None = None,
        after_removal: Callable[[], None] | None = None,
    ) -> None:
        self.manager = manager
        self.spool = spool
        self.node_name = node_name
        self.request = request
        self.state = MoveState(request.mode)
        self.cancel_requested = threading.Event()
        self._on_change = on_change
        #: Called once the source instance is gone (the agent closes its on-demand listener).
        self._after_removal = after_removal
        offer = request.offer
        self.status = MigrationStatus(
            id=migration,
            instance_id=instance.id,
            name=instance.name,
            mode=request.mode,
            target=f"{offer.node} ({offer.host}:{offer.port})",
            step=Step.PREPARE,
            started_at=time.time(),
            ram_bytes=instance.memory_mib << 20,
        )
        self._channel: Channel | None = None
        self._sent_before = 0
        self._frozen_at: float | None = None
        self._live_started = False
        #: A post-copy hand-over: the results position sent with ``restore`` (and ``commit``).
        self._spool: tuple[int, int] | None = None
        #: SHA-256 of each file sent whole, computed as it went out.
        self._digests: dict[str, str] = {}
        #: Per chunk of a snapshot's files: compressed only where it gets the bytes across sooner.
        self._pace = Pace(request.compress, _COMPRESSORS, always=request.compress_always)

    # -- status ----------------------------------------------------------------------------------

    def _advance(self, step: Step) -> None:
        if self.cancel_requested.is_set() and self.state.cancellable:
            raise _Cancelled()
        self.state.advance(step, time.time())
        self._publish()

    def _publish(self) -> None:
        sent = self._sent_before + (self._channel.bytes_sent if self._channel else 0)
        marks = [(Step.PREPARE, self.status.started_at), *self.state.history]
        steps = {
            step.value: round(later - at, 3) for (step, at), (_, later) in itertools.pairwise(marks)
        }
        self.status = self.status.model_copy(
            update={
                "steps": steps,
                "step": self.state.step,
                "failed_step": self.state.failed_step,
                "error": self.state.error,
                "sent_bytes": sent,
                "finished_at": time.time() if self.state.step.final else None,
            }
        )
        if self._on_change is not None:
            self._on_change(self.status)

    # -- the move --------------------------------------------------------------------------------

    def run(self) -> MigrationStatus:
        """Drive the move to its end; never raises (the status says how it ended)."""
        try:
            with self.manager.moving_out(self.status.instance_id) as instance:
                self._move(instance)
        except MigrationError as exc:  # refused before anything happened (not running…)
            if not self.state.step.final:
                self.state.fail(str(exc), time.time())
        except Exception as exc:
            log.exception("move %s failed", self.status.id)
            if not self.state.step.final:
                self.state.fail(repr(exc), time.time())
        self._publish()
        return self.status

    def _move(self, instance: Instance) -> None:
        staging = Path(tempfile.mkdtemp(dir=instance.workdir, prefix=".migrate-out-"))
        stopped = False
        try:
            self._advance(Step.CONNECT)
            self._connect(instance, resume=False)
            files: dict[str, Path] = {}
            spool: tuple[int, int] | None = None
            if self.state.mode is Mode.SNAPSHOT:
                self._advance(Step.FREEZE)
                self._frozen_at = time.monotonic()
                self.manager.freeze(instance, staging / "state")
                spool = self._results_position(instance)
                files = self._files(instance, staging)
                self.status = self.status.model_copy(
                    update={"state_bytes": sum(p.stat().st_size for p in files.values())}
                )
                self._advance(Step.TRANSFER)
                self._transfer(instance, files)
            elif self.state.mode is Mode.LIVE:
                self._advance(Step.TRANSFER)
                if self._live(instance, staging):
                    self._clean_up(instance)  # the target took over at the post-copy switch
                    return
                spool = self._results_position(instance)
                files = self._files(instance, staging, state=False)
                self._transfer(instance, files, resumable=False)
            self._advance(Step.RESTORE)
            digests = {
                name: self._digests.get(name) or _sha256(path) for name, path in files.items()
            }
            self._send(
                {
                    "kind": "restore",
                    "files": digests,
                    "spool": list(spool) if spool else None,
                    "healthy_timeout_s": self.request.healthy_timeout_s,
                },
                step="restore",
            )
            running = self._expect(
                "running", step="restore", timeout=self.request.healthy_timeout_s + 120
            )
            ports = [PortMapping.model_validate(p) for p in running.header.get("ports", [])]
            self.status = self.status.model_copy(update={"target_ports": ports})
            if self.state.mode is Mode.COLD:
                # The new one is healthy: end the old one so its last results are numbered
                # before the target numbers on.
                self.manager.mark_moving(instance, "stopped")
                self.manager.stop(instance.id)
                stopped = True
                spool = self._results_position(instance)
            self._advance(Step.COMMIT)
            self._commit(instance, spool, paused=self._frozen_at is not None or stopped)
            if self._frozen_at is not None:
                self.status = self.status.model_copy(
                    update={"paused_s": round(time.monotonic() - self._frozen_at, 3)}
                )
            self._clean_up(instance)
        except (_Cancelled, MigrationError, UkedgeError, OSError) as exc:
            self._give_back(instance, exc, stopped=stopped)
        finally:
            if self._channel is not None:
                self._channel.close()
            shutil.rmtree(staging, ignore_errors=True)

    def _clean_up(self, instance: Instance) -> None:
        """The target runs the instance: remove it here."""
        self._advance(Step.CLEANUP)
        try:
            self.manager.moved_out(instance, self.status.target, graceful=False)
            if self._after_removal is not None:
                self._after_removal()
        except UkedgeError as exc:
            self.state.fail(f"moved, but removing it here failed: {exc}", time.time())
            return
        self._advance(Step.DONE)

    def _give_back(self, instance: Instance, exc: BaseException, *, stopped: bool) -> None:
        """The move did not happen: the source runs on, the target forgets it."""
        if self.state.committed and self.state.postcopy and self.state.step is Step.COMMIT:
            self._lost_after_commit(instance, exc)
            return
        if self.state.committed:
            # Only the commit's answer was lost and no reconnect could learn the outcome.
            self.state.fail(str(exc), time.time())
            return
        if self.state.postcopy:
            if self.state.step is Step.COMMIT and self._ask_outcome_quietly() == "committed":
                # The answer to the commit was lost, not the commit: the target has it.
                self.state.confirm_commit()
                self._lost_after_commit(instance, exc)
            else:
                self._lost(instance, exc)
            return
        step = self.state.step
        if self._channel is not None and not self._channel.broken:
            with contextlib.suppress(MigrationError):
                self._channel.send({"kind": "abort", "reason": str(exc) or "cancelled"})
        try:
            if self._live_started:
                # QEMU resumes a source whose migration failed itself; one that completed
                # (paused, "postmigrate") is resumed here. Running already is fine.
                with contextlib.suppress(UkedgeError):
                    self.manager.thaw(instance)
            elif self._frozen_at is not None:
                self.manager.thaw(instance)
            elif stopped:
                self.manager.start(instance.id)
                self.manager.mark_moving(instance, None)
        except UkedgeError as thaw_error:
            log.error("move of %s: giving the source back failed: %s", instance.name, thaw_error)
            exc = MigrationError(f"{exc}; and resuming the source failed: {thaw_error}", step)
        if isinstance(exc, _Cancelled):
            self.state.cancel(time.time())
            detail = f"cancelled during {step.value}; it runs on here"
        else:
            self.state.fail(str(exc), time.time())
            detail = f"failed at {step.value}: {exc}; it runs on here"
        log.warning("move of %s to %s %s", instance.name, self.status.target, detail)
        with contextlib.suppress(UkedgeError):
            self.manager.move_failed(instance, detail)

    def _lost(self, instance: Instance, exc: BaseException) -> None:
        """A post-copy move failed after the switch: the guest's memory was split between the
        two nodes, so this one cannot resume it (QEMU's post-copy recovery is not used)."""
        if self._channel is not None and not self._channel.broken:
            with contextlib.suppress(MigrationError):
                self._channel.send({"kind": "abort", "reason": str(exc)})
        error = (
            f"the move failed after it entered post-copy ({exc}): the guest's memory was split "
            "between both nodes, so it cannot resume here; its state is lost (the machine "
            "here is killed, and its restart policy applies)"
        )
        self.state.fail(error, time.time())
        log.error("move of %s to %s: %s", instance.name, self.status.target, error)
        try:
            self.manager.lost_in_postcopy(instance, error)
        except UkedgeError as kill_error:
            log.error("move of %s: ending the source failed: %s", instance.name, kill_error)

    def _lost_after_commit(self, instance: Instance, exc: BaseException) -> None:
        """A post-copy stream failed after the target had taken the instance over: the
        target's guest lacks pages only this machine held, so the target kills it and its
        restart policy boots it afresh there; here the instance goes as after any move."""
        error = (
            f"the post-copy stream failed after the target took the instance over ({exc}): "
            "its memory is lost; it restarts on the target without it (its restart policy)"
        )
        log.error("move of %s to %s: %s", instance.name, self.status.target, error)
        with contextlib.suppress(UkedgeError):
            self.manager.move_failed(instance, error)
        self.state.fail(error, time.time())  # a committed move ends done, with the error
        try:
            self.manager.moved_out(instance, self.status.target, graceful=False)
            if self._after_removal is not None:
                self._after_removal()
        except UkedgeError as remove_error:
            log.error("move of %s: removing it here failed: %s", instance.name, remove_error)

    def _enter_postcopy(self, instance: Instance) -> None:
        """QEMU switched to post-copy: say so (a step, an event); no cancel from here on."""
        if self.state.postcopy:
            return
        self.state.advance(Step.POSTCOPY, time.time())
        self._publish()
        with contextlib.suppress(UkedgeError):
            self.manager.entered_postcopy(instance, self.status.target)

    def _back_path(
        self, ours: socket.socket, answers: queue.Queue[Frame | Exception]
    ) -> tuple[Channel, threading.Thread]:
        """A post-copy move's return path: a second connection (same ticket) on which the
        target sends what its QEMU writes back (page requests, its end-of-stream notice), put
        into the source QEMU's socket here, and, after the switch, its answers to the
        hand-over (``running``, ``committed``, ``error``), put in ``answers``. A connection of
        its own, so each TLS connection is read by one thread and written by one (an SSL object
        is not safe for both at once)."""
        offer = self.request.offer
        back = connect(
            offer.host, offer.port, offer.cert_pem, offer.fingerprint, timeout=_CONNECT_TIMEOUT_S
        )
        try:
            back.send(
                {"kind": "hello", "ticket": offer.ticket, "migration": self.status.id, "back": 1},
                step="transfer",
            )
            back.expect("back-ready", step="transfer", timeout=30.0)
        except MigrationError:
            back.close()
            raise

        def pump() -> None:
            try:
                while True:
                    frame = back.recv(step="transfer", timeout=_BACK_IDLE_S)
                    if frame.kind != "live-back":
                        answers.put(frame)  # the target's answers after the switch
                        continue
                    ours.sendall(frame.payload)
            except (MigrationError, OSError) as exc:
                log.debug("move %s: return path ended: %s", self.status.id, exc)
                answers.put(exc)

        thread = threading.Thread(target=pump, name="ukedge-live-back", daemon=True)
        thread.start()
        return back, thread

    # -- pieces ----------------------------------------------------------------------------------

    def _connect(self, instance: Instance, *, resume: bool) -> dict[str, int]:
        """(Re)open the channel and say hello; returns what the target already has."""
        if self._channel is not None:
            self._sent_before += self._channel.bytes_sent
            self._channel.close()
            self._channel = None
        offer = self.request.offer
        self._channel = connect(
            offer.host, offer.port, offer.cert_pem, offer.fingerprint, timeout=_CONNECT_TIMEOUT_S
        )
        self._channel.send(
            {
                "kind": "hello",
                "ticket": offer.ticket,
                "migration": self.status.id,
                "mode": self.state.mode.value,
                "source": self.node_name,
                "instance": instance.model_dump(mode="json"),
                "ports": [p.model_dump() for p in self.request.ports]
                if self.request.ports is not None
                else None,
                "free_ports": self.request.free_ports,
            },
            step="connect",
        )
        answer = self._channel.recv(step="connect", timeout=120.0)
        if answer.kind == "accept":
            have = answer.header.get("have", {})
            return {str(k): int(v) for k, v in have.items()} if isinstance(have, dict) else {}
        if resume and answer.kind in ("committed", "aborted"):
            raise _Outcome(answer.kind)
        raise MigrationError(f"the target answered {answer.kind!r} to hello", "connect")

    def _send(self, header: dict[str, object], payload: bytes = b"", *, step: str) -> None:
        assert self._channel is not None
        self._channel.send(header, payload, step=step)

    def _expect(self, kind: str, *, step: str, timeout: float) -> Frame:
        assert self._channel is not None
        return self._channel.expect(kind, step=step, timeout=timeout)

    def _results_position(self, instance: Instance) -> tuple[int, int] | None:
        """How far this node's spool read and numbered the instance's results (all of them:
        the machine is paused or stopped)."""
        if self.spool is None:
            return None
        path = self.manager.results_path(instance)
        self.spool.ingest_file(instance.id, self.node_name, path)
        return self.spool.offset(instance.id), self.spool.last_seq(instance.id) + 1

    def _files(self, instance: Instance, staging: Path, *, state: bool = True) -> dict[str, Path]:
        files: dict[str, Path] = {}
        if state:
            files = {f"state/{p.name}": p for p in sorted((staging / "state").iterdir())}
        results = staging / "results"
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(self.manager.results_path(instance), results)
            files["results"] = results
        console = staging / "console"
        console.write_bytes(self.manager.console_bytes(instance))
        files["console"] = console
        return files

    def _transfer(
        self, instance: Instance, files: dict[str, Path], *, resumable: bool = True
    ) -> None:
        have: dict[str, int] = {}
        for attempt in range(_RECONNECTS + 1 if resumable else 1):
            try:
                if attempt:
                    have = self._connect(instance, resume=True)
                for name, path in files.items():
                    self._send_file(name, path, have.get(name, 0))
                return
            except MigrationError as exc:
                broken = self._channel is not None and self._channel.broken
                last = attempt == _RECONNECTS or not resumable
                if not broken or last or self.cancel_requested.is_set():
                    raise
                log.info("move %s: channel broke (%s); resuming", self.status.id, exc)
                time.sleep(_RECONNECT_PAUSE_S[min(attempt, len(_RECONNECT_PAUSE_S) - 1)])

    def _send_file(self, name: str, path: Path, offset: int) -> None:
        """Send ``path`` from ``offset``, compressing the next chunks on the pool's threads
        while this one goes out (zlib releases the GIL) where that pays (:class:`Pace`), and
        hashing it on the way when it is sent whole (else :func:`_sha256` reads it again at
        the restore)."""
        pace = self._pace
        if pace.adaptive:  # its link figures must be the link's, not how fast buffers fill
            assert self._channel is not None
            self._channel.limit_send_buffer(_LIVE_BUFFER)
        digest = hashlib.sha256() if offset == 0 else None
        with path.open("rb") as f, ThreadPoolExecutor(_COMPRESSORS) as pool:
            f.seek(offset)
            pending: collections.deque[tuple[bytes, int, Future[tuple[bytes, float]]]]
            pending = collections.deque()
            while True:
                while len(pending) < 2 * _COMPRESSORS:
                    level = pace.next_level()
                    raw = f.read(PROBE_BYTES if pace.probing else CHUNK_BYTES)
                    if not raw:
                        break
                    pending.append((raw, level, pool.submit(_encode_timed, raw, level)))
                if not pending:
                    break
                if self.cancel_requested.is_set():
                    raise _Cancelled()
                raw, level, encoded = pending.popleft()
                payload, took = encoded.result()
                if level:
                    pace.compressed(len(raw), len(payload), took)
                header = {"kind": "file", "name": name, "offset": offset, "raw": len(raw)}
                sending = time.monotonic()
                self._send({**header, "z": bool(level)}, payload, step="transfer")
                pace.sent(len(payload), time.monotonic() - sending)
                if digest is not None:
                    digest.update(raw)
                offset += len(raw)
                self._publish()
        if digest is not None:
            self._digests[name] = digest.hexdigest()

    def _live(self, instance: Instance, staging: Path) -> bool:
        """Carry QEMU's pre-copy stream to the target while the guest runs here; returns once
        QEMU completed it (the guest is paused here then). A post-copy move that switched hands
        the instance over at the switch (:meth:`_hand_over`) while the rest of the RAM still
        goes, and returns True once the target has committed and QEMU completed."""
        postcopy = self.request.postcopy
        self._send({"kind": "live-start", "postcopy": postcopy}, step="transfer")
        self._expect("live-ready", step="transfer", timeout=120.0)
        qemu_end, ours = socket.socketpair()
        for sock in (qemu_end, ours):  # little in flight: see Channel.limit_send_buffer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _LIVE_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _LIVE_BUFFER)
        assert self._channel is not None
        self._channel.limit_send_buffer(_LIVE_BUFFER)
        outcome: dict[str, Any] = {}
        back: tuple[Channel, threading.Thread] | None = None
        answers: queue.Queue[Frame | Exception] = queue.Queue()
        if postcopy:
            try:
                back = self._back_path(ours, answers)
            except MigrationError:
                qemu_end.close()
                ours.close()
                raise
        switched = threading.Event()

        def migrate() -> None:
            try:
                outcome["info"] = self.manager.migrate_live(
                    instance,
                    qemu_end.fileno(),
                    downtime_limit_ms=self.request.downtime_limit_ms or 300,
                    auto_converge=self.request.auto_converge,
                    postcopy=postcopy,
                    on_postcopy=switched.set,
                )
            except BaseException as exc:  # handed to the driver thread below
                outcome["error"] = exc
            finally:
                qemu_end.close()  # QEMU holds its own copy until it is done

        self._live_started = True
        self.manager.mark_moving(instance, "frozen")  # QEMU stops the guest at the end
        thread = threading.Thread(target=migrate, name="ukedge-live-qmp", daemon=True)
        thread.start()
        level = self.request.compress
        published = time.monotonic()
        handed_over = False
        try:
            while True:
                if switched.is_set() and not handed_over:
                    self._enter_postcopy(instance)
                    # A page the target's guest asks for waits behind what is in flight here:
                    # keep little in flight from now on.
                    with contextlib.suppress(OSError):  # (closed once QEMU completed)
                        qemu_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _POSTCOPY_BUFFER)
                    self._hand_over(instance, staging)
                    self._channel.limit_send_buffer(_POSTCOPY_BUFFER)  # (after its files)
                    handed_over = True
                if handed_over and not self.state.committed:
                    # (after the commit the return path ends when the target's QEMU has
                    # loaded everything; a real failure there fails the source's QEMU)
                    self._take_answers(instance, answers, block=False)
                if self.cancel_requested.is_set() and not switched.is_set():
                    raise _Cancelled()
                if handed_over and not select.select([ours], [], [], 0.05)[0]:
                    continue  # (the target's answers come on the return path meanwhile)
                data = ours.recv(CHUNK_BYTES)
                if not data:
                    break
                header = {"kind": "live", "raw": len(data), "z": bool(level)}
                self._send(header, encode_chunk(data, level), step="transfer")
                if time.monotonic() - published > 0.2:
                    published = time.monotonic()
                    self._publish()
            thread.join()
            error = outcome.get("error")
            if error is not None:
                raise MigrationError(f"QEMU's live migration failed: {error}", "transfer")
            if switched.is_set() and not handed_over:
                # The rest went before this thread saw the switch (a guest that dirtied little
                # since the first pass): the hand-over is the same, only later.
                self._enter_postcopy(instance)
                self._hand_over(instance, staging)
                handed_over = True
            while handed_over and not self.state.committed:
                self._take_answers(instance, answers, block=True)
        finally:
            ours.close()  # on failure: QEMU's writes fail, its migration fails, the guest runs on
            thread.join()
            if back is not None:
                back[0].hang_up()
                back[1].join(timeout=10.0)
            if switched.is_set():
                self._enter_postcopy(instance)
        info: dict[str, Any] = outcome["info"]
        downtime_ms = int(info.get("downtime", 0))
        if not handed_over:
            self._frozen_at = time.monotonic() - downtime_ms / 1000
        ram = info.get("ram", {}) if isinstance(info.get("ram"), dict) else {}
        figures = {
            "downtime_ms": downtime_ms,
            "total_time_ms": int(info.get("total-time", 0)),
            "ram_transferred": int(ram.get("transferred", 0)),
            "ram_total": int(ram.get("total", 0)),
            "dirty_sync_count": int(ram.get("dirty-sync-count", 0)),
            "normal_pages": int(ram.get("normal", 0)),
            "zero_pages": int(ram.get("duplicate", 0)),
        }
        if postcopy:
            figures["postcopy"] = int(switched.is_set())
            figures["postcopy_requests"] = int(ram.get("postcopy-requests", 0))
            figures["postcopy_bytes"] = int(ram.get("postcopy-bytes", 0))
        self.status = self.status.model_copy(
            update={"qemu": figures, "state_bytes": figures["ram_transferred"]}
        )
        self._send({"kind": "live-end"}, step="transfer")
        return handed_over

    def _hand_over(self, instance: Instance, staging: Path) -> None:
        """At the post-copy switch (the guest stopped here, its device state on its way):
        send what it wrote here (results, console) and ``restore``, on the channel between
        the stream's frames; the target runs the guest once its QEMU has loaded that device
        state and answers ``running`` on the return path (:meth:`_take_answers`)."""
        self._frozen_at = time.monotonic()
        self.manager.mark_moving(instance, "committing")  # never resumed here: RAM is split
        self._advance(Step.RESTORE)
        spool = self._results_position(instance)
        self._spool = spool
        files = self._files(instance, staging, state=False)
        for name, path in files.items():
            self._send_file(name, path, 0)
        self._send(
            {
                "kind": "restore",
                "files": {name: self._digests[name] for name in files},
                "spool": list(spool) if spool else None,
            },
            step="restore",
        )

    def _take_answers(
        self, instance: Instance, answers: queue.Queue[Frame | Exception], *, block: bool
    ) -> None:
        """Act on the target's answers to a post-copy hand-over: ``running`` (its guest runs:
        commit), ``committed`` (the instance is the target's)."""
        while True:
            try:
                answer = answers.get(timeout=_ANSWER_TIMEOUT_S) if block else answers.get_nowait()
            except queue.Empty:
                if block:
                    raise MigrationError(
                        f"the target did not answer the hand-over within {_ANSWER_TIMEOUT_S:g} s",
                        self.state.step.value,
                    ) from None
                return
            if isinstance(answer, Exception):
                raise MigrationError(
                    f"the return path failed: {answer}", self.state.step.value
                ) from answer
            if answer.kind == "running" and self.state.step is Step.RESTORE:
                assert self._frozen_at is not None
                ports = [PortMapping.model_validate(p) for p in answer.header.get("ports", [])]
                paused = round(time.monotonic() - self._frozen_at, 3)
                self.status = self.status.model_copy(
                    update={"target_ports": ports, "paused_s": paused}
                )
                self._advance(Step.COMMIT)
                self.manager.mark_moving(instance, "committing")
                spool = list(self._spool) if self._spool else None
                self._send({"kind": "commit", "spool": spool}, step="commit")
            elif answer.kind == "committed" and self.state.step is Step.COMMIT:
                self.state.confirm_commit()
                self._publish()
                return
            else:
                raise MigrationError(
                    f"the target sent {answer.kind!r} during the hand-over", self.state.step.value
                )

    def _commit(self, instance: Instance, spool: tuple[int, int] | None, *, paused: bool) -> None:
        if paused:
            self.manager.mark_moving(instance, "committing")
        self._send({"kind": "commit", "spool": list(spool) if spool else None}, step="commit")
        try:
            self._expect("committed", step="commit", timeout=60.0)
        except MigrationError as exc:
            assert self._channel is not None
            if not self._channel.broken:
                raise  # the target refused the commit: nothing is recorded there
            # Sent, answer lost: ask.
            self.state.confirm_commit()  # until the target says otherwise, assume it did
            outcome = self._ask_outcome()
            if outcome != "committed":
                self.state.committed = False
                raise MigrationError(
                    "the target did not take the commit; the source runs on", "commit"
                ) from exc
        self.state.confirm_commit()

    def _ask_outcome(self) -> str:
        for attempt in range(_RECONNECTS):
            time.sleep(_RECONNECT_PAUSE_S[attempt])
            try:
                self._connect(self._instance_stub(), resume=True)
            except _Outcome as outcome:
                return outcome.kind
            except MigrationError:
                continue
            return "aborted"  # accepted as a new or live session: it never committed
        raise MigrationError(
            "the commit was sent but the target could not be asked whether it took it; the "
            "source instance is left paused (not removed): check the target, then remove the "
            "copy that should not run",
            "commit",
        )

    def _ask_outcome_quietly(self) -> str:
        try:
            return self._ask_outcome()
        except MigrationError:
            return "unknown"

    def _instance_stub(self) -> Instance:
        return self.manager.records.find(self.status.instance_id)


class _Outcome(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _encode_timed(raw: bytes, level: int) -> tuple[bytes, float]:
    started = time.perf_counter()
    return encode_chunk(raw, level), time.perf_counter() - started


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
