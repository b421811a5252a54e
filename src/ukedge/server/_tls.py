"""Self-signed TLS identities: the controller's, and each agent's for migrations.

Both are trusted by pinning (a join token carries the controller certificate's SHA-256; a
migration offer carries the target's certificate), never through a CA, so a long-lived
self-signed certificate is the whole of it. The key is written first, then the certificate, each
0600 under a temporary name and renamed (:func:`ukedge.paths.write_private`): a certificate on
disk always has its key beside it, and a crash never leaves a half-written key.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ukedge import paths

__all__ = ["make_self_signed"]

_VALID_DAYS = 10 * 365


def make_self_signed(
    cert_path: Path,
    key_path: Path,
    common_name: str,
    *,
    names: Sequence[x509.GeneralName] = (),
) -> None:
    """Write a new P-256 key and a self-signed certificate for it (``names``: its SANs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    cert = builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    ).sign(key, hashes.SHA256())
    paths.write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    paths.write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
