"""The authenticated, encrypted channel between two agents: TLS with a pinned certificate.

Each agent has a migration identity (a self-signed certificate and its key in
``<data>/migration/``, made once, written 0600 under a temporary name and renamed). A target
hands its certificate and fingerprint out only over its authenticated REST API, with a ticket;
the source trusts exactly that certificate (no CA, no host name) and then proves itself with the
ticket inside TLS. QEMU never listens on a network port for any of this.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ukedge import paths
from ukedge.errors import MigrationError
from ukedge.host.link import certificate_fingerprint, pinned_context
from ukedge.host.migration._protocol import Frame, encode_frame, parse_header
from ukedge.server import make_self_signed

__all__ = ["Channel", "MigrationIdentity", "connect", "ensure_identity"]


@dataclass(frozen=True)
class MigrationIdentity:
    cert_path: Path
    key_path: Path
    cert_pem: str
    fingerprint: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


def ensure_identity(data_dir: Path, node_name: str) -> MigrationIdentity:
    """The agent's migration certificate and key under ``data_dir/migration``, made if absent."""
    directory = data_dir / "migration"
    paths.private_dir(directory)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if not (cert_path.exists() and key_path.exists()):
        make_self_signed(cert_path, key_path, f"ukedge agent {node_name} migration")
    pem = cert_path.read_text()
    return MigrationIdentity(cert_path, key_path, pem, certificate_fingerprint(pem))


class Channel:
    """Frames over one TLS connection; every failure is a MigrationError naming ``step``."""

    def __init__(self, sock: ssl.SSLSocket, *, timeout: float) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self.bytes_sent = 0
        #: The connection itself failed (not a refusal by the peer): a resume may help.
        self.broken = False

    def send(self, header: dict[str, Any], payload: bytes = b"", *, step: str = "") -> None:
        data = encode_frame(header, payload)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.broken = True
            raise MigrationError(f"the channel to the peer broke: {exc}", step) from exc
        self.bytes_sent += len(data)

    def limit_send_buffer(self, size: int) -> None:
        """Keep at most about ``size`` bytes queued in the kernel: a live migration's writer
        (QEMU) then feels the link's real rate, which its downtime estimate is made from,
        instead of filling megabytes of buffers that still drain after it has stopped the
        guest."""
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def _read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n:
            chunk = self._sock.recv(min(n, 1 << 20))
            if not chunk:
                raise EOFError("the peer closed the channel")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def recv(self, *, step: str = "", timeout: float | None = None) -> Frame:
        if timeout is not None:
            self._sock.settimeout(timeout)
        try:
            frame = parse_header(self._read_exact)
        except (OSError, EOFError) as exc:
            self.broken = True
            raise MigrationError(f"the channel to the peer broke: {exc}", step) from exc
        if frame.kind == "error":
            raise MigrationError(
                f"the target refused at {frame.header.get('step', step)}: "
                f"{frame.header.get('message', 'no reason given')}",
                str(frame.header.get("step", step)),
            )
        return frame

    def expect(self, kind: str, *, step: str, timeout: float | None = None) -> Frame:
        frame = self.recv(step=step, timeout=timeout)
        if frame.kind != kind:
            raise MigrationError(f"the peer sent {frame.kind!r} where {kind!r} was due", step)
        return frame

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def hang_up(self) -> None:
        """Close, waking a thread blocked reading it (``close`` alone does not)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self.close()


def connect(host: str, port: int, cert_pem: str, fingerprint: str, *, timeout: float) -> Channel:
    """TLS to the target's migration listener, trusting exactly the offered certificate."""
    if certificate_fingerprint(cert_pem) != fingerprint:
        raise MigrationError(
            "the offered certificate does not match the offered fingerprint; refusing", "connect"
        )
    context = pinned_context(cert_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise MigrationError(
            f"cannot reach the target's migration listener {host}:{port}: {exc}", "connect"
        ) from exc
    try:
        sock = context.wrap_socket(raw, server_hostname=None)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        raise MigrationError(
            f"TLS with {host}:{port} failed (is it the target whose certificate was pinned?): "
            f"{exc}",
            "connect",
        ) from exc
    return Channel(sock, timeout=timeout)
