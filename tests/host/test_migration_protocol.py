"""The pure parts of the migration protocol: the steps of a move, frames, chunks, tickets."""

from __future__ import annotations

import io
import socket
import ssl
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from ukedge.errors import MigrationError, StateError
from ukedge.host.migration import (
    MigrateRequest,
    MigrationOffer,
    Mode,
    MoveState,
    Step,
    TicketBook,
)
from ukedge.host.migration._channel import Channel, connect, ensure_identity
from ukedge.host.migration._protocol import (
    CHUNK_BYTES,
    MAX_PAYLOAD_BYTES,
    decode_chunk,
    encode_chunk,
    encode_frame,
    parse_header,
)

_SNAPSHOT_STEPS = [
    Step.CONNECT,
    Step.FREEZE,
    Step.TRANSFER,
    Step.RESTORE,
    Step.COMMIT,
    Step.CLEANUP,
    Step.DONE,
]


def test_a_snapshot_move_goes_through_its_steps_in_order() -> None:
    move = MoveState(Mode.SNAPSHOT)
    for i, step in enumerate(_SNAPSHOT_STEPS):
        move.advance(step, float(i))
    assert move.step is Step.DONE and move.committed
    assert [s for s, _ in move.history] == _SNAPSHOT_STEPS


def test_a_cold_move_skips_freeze_and_transfer() -> None:
    move = MoveState(Mode.COLD)
    move.advance(Step.CONNECT, 0)
    with pytest.raises(StateError):
        move.advance(Step.FREEZE, 1)
    move.advance(Step.RESTORE, 1)
    assert move.step is Step.RESTORE


def test_steps_cannot_be_skipped_or_repeated() -> None:
    move = MoveState(Mode.SNAPSHOT)
    with pytest.raises(StateError):
        move.advance(Step.TRANSFER, 0)
    move.advance(Step.CONNECT, 0)
    with pytest.raises(StateError):
        move.advance(Step.CONNECT, 0)


def test_failure_before_commit_is_failed_and_names_its_step() -> None:
    move = MoveState(Mode.SNAPSHOT)
    move.advance(Step.CONNECT, 0)
    move.advance(Step.FREEZE, 1)
    move.fail("disk full", 2)
    assert move.step is Step.FAILED
    assert move.failed_step is Step.FREEZE and move.error == "disk full"
    with pytest.raises(StateError):
        move.advance(Step.TRANSFER, 3)


def test_failure_after_commit_leaves_the_move_done() -> None:
    move = MoveState(Mode.SNAPSHOT)
    for step in _SNAPSHOT_STEPS[:5]:
        move.advance(step, 0)
    move.confirm_commit()
    assert not move.cancellable
    move.fail("removing the source failed", 1)
    assert move.step is Step.DONE and move.failed_step is Step.COMMIT


def test_cancel_is_refused_once_committed() -> None:
    move = MoveState(Mode.SNAPSHOT)
    for step in _SNAPSHOT_STEPS[:5]:
        move.advance(step, 0)
    move.confirm_commit()
    with pytest.raises(MigrationError, match="can no longer be cancelled"):
        move.cancel(1)


def test_cancel_before_commit() -> None:
    move = MoveState(Mode.SNAPSHOT)
    move.advance(Step.CONNECT, 0)
    move.advance(Step.FREEZE, 0)
    move.advance(Step.TRANSFER, 0)
    move.cancel(1)
    assert move.step is Step.CANCELLED and move.failed_step is Step.TRANSFER
    assert move.step.final


def test_a_live_move_transfers_without_a_freeze() -> None:
    move = MoveState(Mode.LIVE)
    move.advance(Step.CONNECT, 0)
    with pytest.raises(StateError):
        move.advance(Step.FREEZE, 1)
    move.advance(Step.TRANSFER, 1)
    move.advance(Step.RESTORE, 2)
    assert move.cancellable


def test_post_copy_is_a_live_move_s_optional_step_after_which_it_cannot_go_back() -> None:
    precopy = MoveState(Mode.LIVE)
    for i, step in enumerate([Step.CONNECT, Step.TRANSFER, Step.RESTORE]):
        precopy.advance(step, float(i))
    assert not precopy.postcopy and precopy.cancellable
    with pytest.raises(StateError):
        precopy.advance(Step.POSTCOPY, 3)  # not once the stream has ended
    with pytest.raises(StateError):
        MoveState(Mode.SNAPSHOT).advance(Step.POSTCOPY, 0)

    move = MoveState(Mode.LIVE)
    move.advance(Step.CONNECT, 0)
    with pytest.raises(StateError):
        move.advance(Step.POSTCOPY, 1)  # only from the transfer
    move.advance(Step.TRANSFER, 1)
    move.advance(Step.POSTCOPY, 2)
    assert move.postcopy and not move.cancellable and not move.lost
    with pytest.raises(MigrationError, match="postcopy"):
        move.cancel(3)
    move.fail("the channel broke", 3)
    assert move.step is Step.FAILED and move.failed_step is Step.POSTCOPY and move.lost

    done = MoveState(Mode.LIVE)
    for i, step in enumerate([Step.CONNECT, Step.TRANSFER, Step.POSTCOPY, Step.RESTORE]):
        done.advance(step, float(i))
    for i, step in enumerate([Step.COMMIT, Step.CLEANUP, Step.DONE]):
        done.advance(step, float(4 + i))
    assert done.step is Step.DONE and done.committed and not done.lost


def test_post_copy_is_only_asked_for_live_moves() -> None:
    offer = MigrationOffer(
        node="b", host="127.0.0.1", port=1, cert_pem="x", fingerprint="0" * 64, ticket="t" * 16
    )
    assert not MigrateRequest(offer=offer, mode=Mode.LIVE).postcopy  # off by default
    assert MigrateRequest(offer=offer, mode=Mode.LIVE, postcopy=True).postcopy
    with pytest.raises(ValidationError, match="postcopy is for live moves, not snapshot"):
        MigrateRequest(offer=offer, postcopy=True)


# -- frames ------------------------------------------------------------------------------------


def _reader(data: bytes):  # type: ignore[no-untyped-def]
    buf = io.BytesIO(data)

    def read_exact(n: int) -> bytes:
        chunk = buf.read(n)
        if len(chunk) != n:
            raise EOFError("short")
        return chunk

    return read_exact


def test_frames_round_trip() -> None:
    data = encode_frame({"kind": "file", "name": "results"}, b"abc") + encode_frame({"kind": "x"})
    read = _reader(data)
    first = parse_header(read)
    assert first.kind == "file" and first.payload == b"abc" and first.header["size"] == 3
    second = parse_header(read)
    assert second.kind == "x" and second.payload == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff\xff\xff", "not this protocol"),
        (b"\x00\x00\x00\x04nope", "not JSON"),
        (b"\x00\x00\x00\x02{}", "without a kind"),
        (b'\x00\x00\x00\x1c{"kind":"a","size":99999999}', "over the limit"),
    ],
)
def test_bad_frames_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        parse_header(_reader(data))


def test_oversized_payloads_are_not_sent() -> None:
    with pytest.raises(MigrationError, match="over the limit"):
        encode_frame({"kind": "file"}, b"\0" * (MAX_PAYLOAD_BYTES + 1))


@pytest.mark.parametrize("level", [0, 1, 9])
def test_chunks_round_trip(level: int) -> None:
    raw = b"\0" * (CHUNK_BYTES // 2) + bytes(range(256)) * 64
    assert decode_chunk(encode_chunk(raw, level), len(raw), bool(level)) == raw


def test_a_chunk_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(MigrationError, match="unpacked to"):
        decode_chunk(encode_chunk(b"abcd", 1), 5, True)
    with pytest.raises(MigrationError, match="does not decompress"):
        decode_chunk(b"not zlib", 8, True)


# -- tickets -----------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_ticket_admits_one_move_and_its_reconnects() -> None:
    book = TicketBook(ttl_s=60, clock=_Clock())
    ticket = book.issue()
    book.redeem(ticket, "move-a")
    book.redeem(ticket, "move-a")  # the same move reconnecting
    with pytest.raises(MigrationError, match="already used"):
        book.redeem(ticket, "move-b")


def test_unknown_expired_and_released_tickets_are_refused() -> None:
    clock = _Clock()
    book = TicketBook(ttl_s=60, clock=clock, hold_s=600)
    with pytest.raises(MigrationError, match="unknown or has expired"):
        book.redeem("made-up-ticket-0000", "m")
    old = book.issue()
    clock.now = 61
    with pytest.raises(MigrationError, match="unknown or has expired"):
        book.redeem(old, "m")
    assert len(book) == 0
    used = book.issue()
    book.redeem(used, "m")
    clock.now = 61 + 599  # a bound ticket lasts hold_s from its first use
    book.redeem(used, "m")
    book.release(used)
    with pytest.raises(MigrationError, match="unknown"):
        book.redeem(used, "m")


# -- the channel -------------------------------------------------------------------------------


def test_the_channel_trusts_only_the_pinned_certificate(tmp_path: Path) -> None:
    target = ensure_identity(tmp_path / "target", "target")
    other = ensure_identity(tmp_path / "other", "other")
    assert ensure_identity(tmp_path / "target", "target").fingerprint == target.fingerprint
    assert (tmp_path / "target" / "migration" / "key.pem").stat().st_mode & 0o077 == 0
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received: list[str] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            try:
                tls = target.server_context().wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                continue
            channel = Channel(tls, timeout=5)
            received.append(channel.recv().kind)
            channel.send({"kind": "accept"})
            channel.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    # Pinned to another certificate: the handshake fails before anything is sent.
    with pytest.raises(MigrationError, match="TLS with"):
        connect("127.0.0.1", port, other.cert_pem, other.fingerprint, timeout=5)
    # A certificate that does not match the fingerprint offered with it is not even tried.
    with pytest.raises(MigrationError, match="does not match"):
        connect("127.0.0.1", port, target.cert_pem, other.fingerprint, timeout=5)
    channel = connect("127.0.0.1", port, target.cert_pem, target.fingerprint, timeout=5)
    channel.send({"kind": "hello"})
    assert channel.recv().kind == "accept"
    channel.close()
    thread.join(10)
    server.close()
    assert received == ["hello"]


def test_a_return_path_carries_bytes_back_and_hanging_up_wakes_its_reader(tmp_path: Path) -> None:
    """A post-copy move's second connection: ``live-back`` frames carry what the target's QEMU
    writes back, byte for byte; ``hang_up`` ends a reader blocked on it (``close`` does not)."""
    target = ensure_identity(tmp_path / "target", "target")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    back_bytes = [b"\x00\x01page-request" * 3, bytes(range(256)) * 300]
    got: list[bytes] = []
    ended = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        channel = Channel(target.server_context().wrap_socket(conn, server_side=True), timeout=5)
        assert channel.recv().header.get("back")
        channel.send({"kind": "back-ready"})
        for data in back_bytes:
            channel.send({"kind": "live-back"}, data)
        ended.wait(10)  # then stays open and quiet, as a return path does during pre-copy
        channel.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    channel = connect("127.0.0.1", port, target.cert_pem, target.fingerprint, timeout=5)
    channel.send({"kind": "hello", "back": 1})
    channel.expect("back-ready", step="transfer")
    broke: list[Exception] = []

    def pump() -> None:
        try:
            while True:
                got.append(channel.recv(step="transfer", timeout=3600).payload)
        except MigrationError as exc:
            broke.append(exc)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    pause = threading.Event()
    for _ in range(3000):
        if len(got) == len(back_bytes):
            break
        pause.wait(0.01)
    assert got == back_bytes
    channel.hang_up()
    reader.join(30)
    ended.set()
    assert not reader.is_alive() and broke and "broke" in str(broke[0])
    thread.join(10)
    server.close()
