"""Join tokens, and the TLS pin they carry.

A join token is ``UKJ1.<fingerprint>.<id>.<secret>``: the SHA-256 of the controller's TLS
certificate (DER), then the token's id and secret. As with k3s's ``K10<ca-hash>::…`` tokens, the
pin lets a node that has nothing but the token make sure it talks to the right controller before
it sends the secret: it fetches the certificate, compares its fingerprint with the pin and from
then on trusts exactly that certificate (not a CA, not a host name). One token may enrol many
nodes; each gets a credential of its own.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ukedge.errors import UsageError

__all__ = [
    "JoinToken",
    "certificate_fingerprint",
    "fetch_certificate",
    "pinned_context",
]

_PREFIX = "UKJ1"
_TOKEN = re.compile(r"^UKJ1\.([0-9a-f]{64})\.([0-9a-z]{8,32})\.([A-Za-z0-9_-]{16,128})$")


@dataclass(frozen=True)
class JoinToken:
    fingerprint: str
    token_id: str
    secret: str

    def encode(self) -> str:
        return f"{_PREFIX}.{self.fingerprint}.{self.token_id}.{self.secret}"

    @property
    def credential(self) -> str:
        """What the node sends to enrol (``id.secret``); the pin never leaves the node."""
        return f"{self.token_id}.{self.secret}"

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        match = _TOKEN.match(text.strip())
        if match is None:
            raise UsageError(
                "invalid join token: expected UKJ1.<64 hex digits>.<id>.<secret>, as printed by "
                "`ukedge controller token create`"
            )
        return cls(*match.groups())


def certificate_fingerprint(cert_pem: str) -> str:
    """SHA-256 (hex) of a PEM certificate's DER bytes."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest()


def fetch_certificate(url: str, fingerprint: str, *, timeout: float = 10.0) -> str:
    """The controller's certificate (PEM), fetched without trusting it and checked against the
    token's pin; raises :class:`UsageError` when it is not the pinned one."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"controller URL {url!r}: expected https://HOST[:PORT]")
    pem = ssl.get_server_certificate((parts.hostname, parts.port or 443), timeout=timeout)
    found = certificate_fingerprint(pem)
    if found != fingerprint:
        raise UsageError(
            f"the server at {url} is not the controller this join token was made for: its "
            f"certificate's SHA-256 is {found}, the token pins {fingerprint}"
        )
    return pem


def pinned_context(cert_pem: str) -> ssl.SSLContext:
    """A client TLS context that trusts exactly ``cert_pem`` (a self-signed controller
    certificate), whatever host name or address the controller is reached by."""
    context = ssl.create_default_context(cadata=cert_pem)
    context.check_hostname = False  # the pin is the certificate itself, not a name
    context.verify_mode = ssl.CERT_REQUIRED
    return context
