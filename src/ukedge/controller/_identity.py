"""The controller's identity: a self-signed TLS certificate and key, and the admin token.

Made at first start in the data directory and kept: join tokens pin the certificate's SHA-256,
so a new certificate would orphan every token handed out and every enrolled node. The key and
the token are written 0600 under a temporary name and renamed, so a crash leaves either the
whole file or none (never a half-written key the next start would trust). Several controller
processes on one PostgreSQL must share one data directory's identity (copy it to each host),
or nodes would refuse all but one of them.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ukedge import paths
from ukedge.host.agent import ensure_token
from ukedge.host.link import certificate_fingerprint
from ukedge.server import make_self_signed

__all__ = ["Identity", "ensure_identity"]


@dataclass(frozen=True)
class Identity:
    cert_path: Path
    key_path: Path
    cert_pem: str
    fingerprint: str  # SHA-256 of the certificate's DER, as join tokens pin it
    admin_token: str
    made_now: bool  # the certificate was made by this start


def _make_certificate(cert_path: Path, key_path: Path) -> None:
    host = socket.gethostname() or "localhost"
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if host != "localhost":
        names.append(x509.DNSName(host))
    names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    make_self_signed(cert_path, key_path, f"ukedge controller {host}", names=names)
    cert_path.chmod(0o644)


def ensure_identity(data_dir: Path, cert_path: Path, key_path: Path, token_path: Path) -> Identity:
    """The identity in ``data_dir`` (made 0700), made when the certificate or key is missing."""
    paths.private_dir(data_dir)
    made = not (cert_path.exists() and key_path.exists())
    if made:
        _make_certificate(cert_path, key_path)
    elif key_path.stat().st_mode & 0o077:
        key_path.chmod(0o600)
    token, _ = ensure_token(token_path)
    cert_pem = cert_path.read_text()
    return Identity(
        cert_path=cert_path,
        key_path=key_path,
        cert_pem=cert_pem,
        fingerprint=certificate_fingerprint(cert_pem),
        admin_token=token,
        made_now=made,
    )
