"""Self-signed certificates for tests that need a real TLS peer (the controller's is one)."""

from __future__ import annotations

from pathlib import Path

from ukedge.server import make_self_signed

__all__ = ["self_signed_cert"]


def self_signed_cert(directory: Path, name: str) -> tuple[Path, Path, str]:
    """A self-signed certificate for ``name`` and its key, written to ``directory`` as the
    product writes its own (``server.make_self_signed``): ``(cert path, key path, cert PEM)``."""
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    make_self_signed(cert_path, key_path, name)
    return cert_path, key_path, cert_path.read_text()
