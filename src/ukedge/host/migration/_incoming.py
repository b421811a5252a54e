"""The target side of a move: the TLS migration listener and one session per incoming move.

A session outlives a connection while the state is still being received (the source may
reconnect with its ticket and resume where the transfer broke); a session whose source stays
away longer than ``resume_grace_s`` is aborted. Once the machine runs here, a lost connection
aborts at once: the source did not commit (a commit frame that arrived was handled before the
loss was noticed), so it resumes its own machine. The outcome of each finished session is kept
for a while, so a source that lost the answer to its commit can reconnect and ask.

Crashes: the instance directory is made, and its operation lock held, before anything is
received into it; the record is inserted only at the commit. A target killed before the commit
leaves a directory without a record, which the next agent start sweeps (machine killed,
directory deleted); the source resumes when its channel breaks.

Long on purpose: every step of a session (hello, state, live and post-copy streams, the return
path, restore, commit, abort, the resume grace) reads and changes the same session under the
listener's lock, and the order between them is the protocol's guarantee; kept in one class, a
reader sees each transition beside the others. The parts that stand alone are apart already
(``_protocol`` frames and channels, ``_models``, ``_outgoing`` the source's side).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ukedge.errors import ImageError, MigrationError, UkedgeError
from ukedge.host._models import Instance, PortMapping
from ukedge.host.migration._channel import Channel, MigrationIdentity
from ukedge.host.migration._protocol import Frame, Mode, TicketBook, decode_chunk
from ukedge.image import parse_reference

if TYPE_CHECKING:
    from ukedge.host._node import LocalNode
    from ukedge.host.results import ResultSpool

__all__ = ["MigrationListener"]

log = logging.getLogger(__name__)

#: Files a move may carry: the machine state (``state/…``), the results and the console.
_FILE_NAME = re.compile(r"^(state/[A-Za-z0-9._-]{1,64}|results|console)\Z")
_HELLO_TIMEOUT_S = 30.0
#: How long a step may take without a frame from the source (restores are answered by us).
_IDLE_TIMEOUT_S = 120.0
_OUTCOMES_KEPT = 64
#: Bytes of a post-copy return path per frame (page requests are a few dozen bytes each).
_BACK_CHUNK = 64 << 10


@dataclass
class _Session:
    migration: str
    ticket: str
    mode: Mode
    source: str
    candidate: Instance
    spool_position: tuple[int, int] | None = None
    files: dict[str, int] = field(default_factory=dict)
    #: SHA-256 of each file so far (chunks arrive in order, so it is computed as they come).
    digests: dict[str, Any] = field(default_factory=dict)
    instance: Instance | None = None
    machine: Any = None
    connected: bool = False
    #: Live moves: the connection to the local QEMU's incoming socket.
    live: socket.socket | None = None
    #: A post-copy move: its QEMU writes back on ``live`` (relayed on a second connection).
    postcopy: bool = False
    back_open: bool = False
    #: The return path's connection, and the lock its writers share (after the switch the
    #: target's answers to the hand-over go on it too: the source's main thread only writes).
    back: Channel | None = None
    back_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set once the return path has nothing more to carry (``committed`` sent, or aborted).
    back_done: threading.Event = field(default_factory=threading.Event)
    #: A post-copy hand-over: the guest runs here (``running`` was sent), and the incoming
    #: migration's status QEMU gave right after it let the guest run.
    running: bool = False
    running_while: str | None = None
    #: Committed while the post-copy stream still comes: a failure now loses the guest's state.
    streaming: bool = False
    lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def workdir(self) -> Path:
        return Path(self.candidate.workdir)

    @property
    def incoming(self) -> Path:
        return self.workdir / "incoming"


class MigrationListener:
    """Accepts moves onto this node over TLS (started on the first offer)."""

    def __init__(
        self,
        node: LocalNode,
        spool: ResultSpool | None,
        identity: MigrationIdentity,
        tickets: TicketBook,
        *,
        node_name: str,
        host: str,
        resume_grace_s: float = 60.0,
        before_commit: Callable[[Instance], None] | None = None,
    ) -> None:
        """``before_commit``: told of each instance about to be recorded here (the controller
        link holds it until its desired state lists it); an error it raises aborts the move."""
        self.node = node
        self.manager = node.manager
        self.spool = spool
        self.identity = identity
        self.tickets = tickets
        self.node_name = node_name
        self.host = host
        self.resume_grace_s = resume_grace_s
        self.before_commit = before_commit
        self._sessions: dict[str, _Session] = {}
        self._outcomes: dict[str, str] = {}
        self._guard = threading.Lock()
        self._listener: socket.socket | None = None
        self._context = identity.server_context()
        self._closed = threading.Event()

    @property
    def port(self) -> int:
        """The listener's port (it listens from the first call on)."""
        with self._guard:
            if self._listener is None:
                listener = socket.create_server((self.host, 0))
                self._listener = listener
                threading.Thread(
                    target=self._accept, args=(listener,), name="ukedge-migrate-in", daemon=True
                ).start()
            return int(self._listener.getsockname()[1])

    def close(self) -> None:
        self._closed.set()
        with self._guard:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            sessions = list(self._sessions.values())
        for session in sessions:
            self._abort(session, "the target agent is shutting down")

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(conn, peer), name="ukedge-migrate-conn", daemon=True
            ).start()

    # -- one connection ------------------------------------------------------------------------

    def _serve(self, conn: socket.socket, peer: Any) -> None:
        conn.settimeout(_HELLO_TIMEOUT_S)
        try:
            tls = self._context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.warning("migration connection from %s: TLS failed: %s", peer, exc)
            conn.close()
            return
        channel = Channel(tls, timeout=_HELLO_TIMEOUT_S)
        session: _Session | None = None
        try:
            hello = channel.expect("hello", step="connect")
            if hello.header.get("back"):
                self._serve_back(hello, channel)
                return
            session = self._open(hello, channel)
            if session is None:
                return
            self._receive(session, channel)
        except (MigrationError, UkedgeError) as exc:
            if session is not None and session.streaming:
                self._lost(session, str(exc))
                return
            if channel.broken and session is not None and session.instance is None:
                # The source may reconnect and resume the transfer (see _disconnected).
                log.info("incoming move%s: channel lost (%s)", _of(session), exc)
                return
            step = getattr(exc, "step", None) or "prepare"
            log.warning("incoming move%s failed at %s: %s", _of(session), step, exc)
            with contextlib.suppress(MigrationError):
                channel.send({"kind": "error", "step": step, "message": str(exc)})
            if session is not None:
                self._abort(session, str(exc))
        except Exception as exc:
            log.exception("incoming move%s failed", _of(session))
            if session is not None and session.streaming:
                self._lost(session, repr(exc))
                return
            with contextlib.suppress(MigrationError):
                channel.send({"kind": "error", "step": "target", "message": f"bug: {exc!r}"})
            if session is not None:
                self._abort(session, repr(exc))
        finally:
            channel.close()
            if session is not None:
                self._disconnected(session)

    def _open(self, hello: Frame, channel: Channel) -> _Session | None:
        h = hello.header
        migration, ticket = str(h.get("migration", "")), str(h.get("ticket", ""))
        if not re.fullmatch(r"[0-9a-f]{8,64}", migration):
            raise MigrationError("hello without a valid migration id", "connect")
        self.tickets.redeem(ticket, migration)
        with self._guard:
            outcome = self._outcomes.get(migration)
            session = self._sessions.get(migration)
            if session is not None and session.connected:
                raise MigrationError("this move is already connected", "connect")
            if session is not None:
                session.connected = True
        if outcome is not None:
            channel.send({"kind": outcome})  # "committed" or "aborted": the source asked
            return None
        if session is None:
            session = self._new_session(h, migration, ticket)
        channel.send({"kind": "accept", "have": dict(session.files), "node": self.node_name})
        return session

    def _serve_back(self, hello: Frame, channel: Channel) -> None:
        """A post-copy move's return path: what the local QEMU writes back on its incoming
        socket (page requests, its end-of-stream notice) goes to the source, on this second
        connection, until QEMU or the move closes that socket."""
        migration, ticket = str(hello.header.get("migration", "")), str(hello.header.get("ticket"))
        self.tickets.redeem(ticket, migration)  # bound to this move by its first hello
        with self._guard:
            session = self._sessions.get(migration)
            live = session.live if session is not None else None
            if session is None or live is None or not session.postcopy or session.back_open:
                raise MigrationError("a return path for no post-copy stream", "transfer")
            session.back_open = True
            session.back = channel
        self._send_back(session, {"kind": "back-ready"})
        while True:
            try:
                data = live.recv(_BACK_CHUNK)
            except OSError:
                break
            if not data:
                break
            self._send_back(session, {"kind": "live-back"}, data)
        # QEMU may have loaded everything before the hand-over's answers went: they still
        # need this connection, so it stays until the session ends.
        session.back_done.wait(_IDLE_TIMEOUT_S)

    def _send_back(self, session: _Session, header: dict[str, Any], data: bytes = b"") -> None:
        if session.back is None:
            raise MigrationError("a post-copy hand-over without a return path", "restore")
        with session.back_lock:
            session.back.send(header, data, step="transfer")

    def _new_session(self, h: dict[str, Any], migration: str, ticket: str) -> _Session:
        try:
            mode = Mode(str(h.get("mode")))
            record = Instance.model_validate(h["instance"])
            ports = [PortMapping.model_validate(p) for p in h.get("ports") or record.ports]
        except (KeyError, ValueError) as exc:
            raise MigrationError(f"hello does not describe an instance: {exc}", "prepare") from None
        self._ensure_image(record)
        candidate = self.manager.incoming(record, ports, free_ports=h.get("free_ports") is True)
        session = _Session(
            migration, ticket, mode, str(h.get("source", "?")), candidate, connected=True
        )
        session.lock.enter_context(self.manager.receiving(candidate))
        try:
            session.incoming.mkdir(mode=0o700)
            (session.incoming / "state").mkdir(mode=0o700)
        except BaseException:
            session.lock.close()
            self.manager.abort_incoming(session.workdir, None)
            raise
        with self._guard:
            self._sessions[migration] = session
        log.info(
            "incoming move %s of %s from %s (%s)", migration, record.name, session.source, mode
        )
        return session

    def _ensure_image(self, record: Instance) -> None:
        store = self.node.cache.store
        try:
            store.resolve(record.image_digest)
            return
        except ImageError:
            pass
        try:
            self.node.pull(record.image)
            try:
                store.resolve(record.image_digest)
            except ImageError:
                # A multi-platform image whose manifest the instance runs is not this node's
                # platform: a move keeps what the instance runs, so that manifest by digest.
                pinned = f"{parse_reference(record.image).name}@{record.image_digest}"
                self.node.pull(pinned)
                store.resolve(record.image_digest)
        except UkedgeError as exc:
            raise MigrationError(
                f"the target lacks image {record.image} ({record.image_digest[:19]}) and could "
                f"not pull it: {exc}",
                "prepare",
            ) from exc

    def _receive(self, session: _Session, channel: Channel) -> None:
        while True:
            frame = channel.recv(step="transfer", timeout=_IDLE_TIMEOUT_S)
            if frame.kind == "file":
                self._write(session, frame)
            elif frame.kind == "live":
                self._relay(session, frame)
            elif frame.kind == "live-start":
                self._start_live(session, postcopy=frame.header.get("postcopy") is True)
                channel.send({"kind": "live-ready"})
            elif frame.kind == "live-end":
                if session.live is not None:
                    if session.postcopy:  # (wakes the return path's reader)
                        with contextlib.suppress(OSError):
                            session.live.shutdown(socket.SHUT_RDWR)
                    session.live.close()  # QEMU reads to the end, then loads
                    session.live = None
                if session.streaming:  # handed over at the post-copy switch, now complete
                    session.streaming = False
                    log.info("post-copy move of %s complete", session.candidate.name)
                    return
            elif frame.kind == "restore" and session.postcopy and session.live is not None:
                self._restore(session, frame)  # checks; the hand-over runs beside the stream
                threading.Thread(
                    target=self._hand_over,
                    args=(session,),
                    name="ukedge-migrate-handover",
                    daemon=True,
                ).start()
            elif frame.kind == "restore":
                self._restore(session, frame)
                assert session.instance is not None
                channel.send(
                    {"kind": "running", "ports": [p.model_dump() for p in session.instance.ports]}
                )
            elif frame.kind == "commit" and session.live is not None:
                if not session.running:
                    raise MigrationError("commit before the instance runs here", "commit")
                instance = self._commit(session, frame)
                session.streaming = True
                try:
                    self._send_back(
                        session, {"kind": "committed", "instance": instance.model_dump(mode="json")}
                    )
                finally:
                    session.back_done.set()
            elif frame.kind == "commit":
                instance = self._commit(session, frame)
                channel.send({"kind": "committed", "instance": instance.model_dump(mode="json")})
                return
            elif frame.kind == "abort":
                reason = str(frame.header.get("reason", "the source aborted"))
                if session.streaming:
                    self._lost(session, reason)
                else:
                    self._abort(session, reason)
                return
            else:
                raise MigrationError(f"unexpected {frame.kind!r} frame", "transfer")

    def _write(self, session: _Session, frame: Frame) -> None:
        h = frame.header
        name, offset, raw_size = h.get("name"), h.get("offset"), h.get("raw")
        if not isinstance(name, str) or not _FILE_NAME.match(name):
            raise MigrationError(f"file name {name!r} is not one a move carries", "transfer")
        if not isinstance(offset, int) or not isinstance(raw_size, int):
            raise MigrationError("file chunk without offset or size", "transfer")
        have = session.files.get(name, 0)
        if offset != have:
            raise MigrationError(f"{name}: chunk at {offset}, expected {have}", "transfer")
        data = decode_chunk(frame.payload, raw_size, bool(h.get("z")))
        path = session.incoming / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        session.files[name] = offset + len(data)
        session.digests.setdefault(name, hashlib.sha256()).update(data)

    def _start_live(self, session: _Session, *, postcopy: bool) -> None:
        if session.mode is not Mode.LIVE or session.instance is not None:
            raise MigrationError("live-start out of turn", "transfer")
        instance, machine = self.manager.boot_incoming(
            session.candidate, restore_from=None, results=None, console=None, live=True
        )
        session.instance, session.machine = instance, machine
        if postcopy:
            try:
                self.manager.accept_postcopy(machine)
            except UkedgeError as exc:
                raise MigrationError(
                    f"this node cannot take a post-copy move ({exc}): its QEMU needs "
                    "userfaultfd, which QEMU 7.2 gets as an unprivileged user only with the "
                    "sysctl vm.unprivileged_userfaultfd=1 (or run QEMU as root: --qemu-user ''); "
                    "or move without --postcopy",
                    "transfer",
                ) from exc
            session.postcopy = True
        path = self.manager.incoming_socket(instance)
        deadline = time.monotonic() + 30
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise MigrationError(
                        f"QEMU's incoming socket {path} did not open: {exc}", "transfer"
                    ) from exc
                time.sleep(0.01)
        session.live = sock

    def _relay(self, session: _Session, frame: Frame) -> None:
        if session.live is None:
            raise MigrationError("a live stream frame before live-start", "transfer")
        raw_size = frame.header.get("raw")
        if not isinstance(raw_size, int):
            raise MigrationError("live frame without its size", "transfer")
        data = decode_chunk(frame.payload, raw_size, bool(frame.header.get("z")))
        try:
            session.live.sendall(data)
        except OSError as exc:
            raise MigrationError(f"QEMU stopped taking the live stream: {exc}", "transfer") from exc

    def _hand_over(self, session: _Session) -> None:
        """A post-copy move's switch: once QEMU has loaded the device state sent there, put
        the results and console in place and let the guest run (it faults in the pages the
        source still holds), and say so on the return path; the commit follows."""
        try:
            incoming = session.incoming
            session.running_while = self.manager.finish_live_incoming(
                session.machine,
                results=incoming / "results" if "results" in session.files else None,
                console=incoming / "console" if "console" in session.files else None,
            )
            session.running = True
            log.info(
                "incoming move%s: its guest runs here (incoming migration %s)",
                _of(session),
                session.running_while,
            )
            assert session.instance is not None
            ports = [p.model_dump() for p in session.instance.ports]
            self._send_back(session, {"kind": "running", "ports": ports})
        except (UkedgeError, OSError) as exc:
            log.warning("incoming move%s: the post-copy hand-over failed: %s", _of(session), exc)
            with contextlib.suppress(MigrationError):
                self._send_back(session, {"kind": "error", "step": "restore", "message": str(exc)})
            self._abort(session, str(exc))

    def _lost(self, session: _Session, why: str) -> None:
        """The post-copy stream failed after the commit: the guest here lacks pages that only
        the source held, so it must not run on; its machine is killed and the instance's
        restart policy boots it afresh here (its memory is lost)."""
        session.streaming = False
        session.back_done.set()
        assert session.instance is not None
        detail = (
            f"the post-copy stream from {session.source} failed after the hand-over ({why}): "
            "the instance's memory is lost; its restart policy boots it afresh"
        )
        log.error("moved-in %s: %s", session.candidate.name, detail)
        try:
            self.manager.lost_in_postcopy(session.instance, detail)
        except UkedgeError as exc:
            log.error("moved-in %s: killing its machine failed: %s", session.candidate.name, exc)

    def _restore(self, session: _Session, frame: Frame) -> None:
        digests = frame.header.get("files")
        if not isinstance(digests, dict):
            raise MigrationError("restore without file digests", "restore")
        for name, digest in digests.items():
            if name not in session.files and digest == _EMPTY:
                (session.incoming / name).touch(mode=0o600)
                session.files[name] = 0
            have = session.digests[name].hexdigest() if name in session.digests else _EMPTY
            if name not in session.files or have != digest:
                raise MigrationError(f"{name} arrived damaged or incomplete", "restore")
        spool = frame.header.get("spool")
        if isinstance(spool, list) and len(spool) == 2:
            session.spool_position = (int(spool[0]), int(spool[1]))
        results = session.incoming / "results" if "results" in session.files else None
        console = session.incoming / "console" if "console" in session.files else None
        if session.mode is Mode.LIVE:
            if session.machine is None:
                raise MigrationError("restore before the live stream started", "restore")
            if session.live is not None:
                if not session.postcopy:
                    raise MigrationError("restore before the live stream ended", "restore")
                return  # a post-copy hand-over: _hand_over lets the guest run
            self.manager.finish_live_incoming(session.machine, results=results, console=console)
            return
        snapshot = session.mode is Mode.SNAPSHOT
        healthy = frame.header.get("healthy_timeout_s", 120.0)
        instance, machine = self.manager.boot_incoming(
            session.candidate,
            restore_from=session.incoming / "state" if snapshot else None,
            results=results,
            console=console,
            healthy_timeout_s=float(healthy),
        )
        session.instance, session.machine = instance, machine

    def _commit(self, session: _Session, frame: Frame) -> Instance:
        spool = frame.header.get("spool")
        if isinstance(spool, list) and len(spool) == 2:  # a cold move numbers at the end
            session.spool_position = (int(spool[0]), int(spool[1]))
        if session.instance is None:
            raise MigrationError("commit before the instance runs here", "commit")
        if self.spool is not None and session.spool_position is not None:
            offset, next_seq = session.spool_position
            self.spool.continue_stream(
                session.candidate.id, self.node_name, offset=offset, next_seq=next_seq
            )
        try:
            if self.before_commit is not None:
                self.before_commit(session.instance)
            note = ""
            if session.running_while == "postcopy-active":
                note = " (post-copy: running here while the rest of its memory arrives)"
            instance = self.manager.commit_incoming(session.instance, session.source, note=note)
        except BaseException:
            if self.spool is not None:
                self.spool.forget(session.candidate.id)
            raise
        self._finish(session, "committed")
        if instance.on_demand and self.node.on_demand is not None:
            try:
                self.node.on_demand.sync()  # its proxy listens here from now on
            except UkedgeError as exc:
                log.warning("moved-in %s: its on-demand listener: %s", instance.name, exc)
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(session.incoming, ignore_errors=True)
        log.info("moved in %s from %s", instance.name, session.source)
        return instance

    def _abort(self, session: _Session, why: str) -> None:
        with self._guard:
            if session.done.is_set():
                return
        log.info(
            "incoming move %s of %s aborted: %s", session.migration, session.candidate.name, why
        )
        self.manager.abort_incoming(session.workdir, session.machine)
        self._finish(session, "aborted")

    def _finish(self, session: _Session, outcome: str) -> None:
        if outcome != "committed" or session.live is None:
            session.back_done.set()  # (a post-copy hand-over's commit sets it once answered)
        with self._guard:
            session.done.set()
            self._sessions.pop(session.migration, None)
            self._outcomes[session.migration] = outcome
            while len(self._outcomes) > _OUTCOMES_KEPT:
                del self._outcomes[next(iter(self._outcomes))]
        session.lock.close()

    def _disconnected(self, session: _Session) -> None:
        with self._guard:
            session.connected = False
            if session.done.is_set():
                return
        if session.instance is not None:
            # Running here but not committed: the source did not commit, and resumes itself.
            self._abort(session, "the source went away before it committed")
            return

        def expire() -> None:
            with self._guard:
                if session.connected or session.done.is_set():
                    return
            self._abort(session, f"the source did not come back within {self.resume_grace_s:g} s")

        timer = threading.Timer(self.resume_grace_s, expire)
        timer.daemon = True
        timer.start()


_EMPTY = hashlib.sha256(b"").hexdigest()


def _of(session: _Session | None) -> str:
    return f" {session.migration} of {session.candidate.name}" if session else ""
