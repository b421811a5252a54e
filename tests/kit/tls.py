"""TLS test helpers: a self-signed certificate, and an ASGI app served over HTTPS (or plain HTTP)
by uvicorn in a thread: the controller's client is tested against real TLS, not a mock."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from cryptography import x509
from starlette.types import ASGIApp

from kit.net import free_port
from ukedge.server import make_self_signed, uvicorn_config


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path

    @property
    def pem(self) -> str:
        return self.cert.read_text()


def self_signed(directory: Path, name: str = "test-controller") -> CertFiles:
    """A certificate for localhost and 127.0.0.1, and its key, as PEM files in ``directory``
    (made as the controller makes its own: ``server.make_self_signed``)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(directory / f"{name}.crt", directory / f"{name}.key")
    make_self_signed(
        files.cert,
        files.key,
        name,
        names=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    return files


@contextlib.contextmanager
def serve_asgi(app: ASGIApp, certs: CertFiles | None) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1, over HTTPS with ``certs`` (plain HTTP with
    ``None``); yields its base URL."""
    port = free_port()
    tls = {"ssl_certfile": str(certs.cert), "ssl_keyfile": str(certs.key)} if certs else {}
    config = uvicorn_config(app, host="127.0.0.1", port=port, **tls)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("HTTPS test server did not start")
        time.sleep(0.02)
    try:
        yield f"{'https' if certs else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
