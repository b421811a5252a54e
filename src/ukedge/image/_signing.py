"""Image signatures in cosign's key-pair format: what is signed, and what a valid signature is.

A signature is a *simple signing* payload (Red Hat's "atomic container signature" format as
cosign writes it) that names the manifest digest, plus an ECDSA signature of the payload's exact
bytes, base64 in the layer annotation ``dev.cosignproject.cosign/signature``. The payload is
signed, not the manifest: a verifier hashes nothing large, and the manifest digest inside the
payload pins the config and every layer through their digests. A payload naming another digest
is a valid signature of another image, so the digest is checked after the signature.

How the signatures travel (OCI referrers and cosign's ``sha256-<hex>.sig`` tag) is
:mod:`ukedge.registry._signatures`'; this module knows only bytes and keys.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ukedge.errors import SignatureError
from ukedge.image._keys import PrivateKey, PublicKey

__all__ = [
    "SIGNATURE_ANNOTATION",
    "SIGNATURE_ARTIFACT_TYPE",
    "SIMPLE_SIGNING",
    "Signature",
    "Verdict",
    "make_signature",
    "signature_payload",
    "verify_signatures",
]

#: Media type of a signature layer (its blob is the payload).
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
#: ``artifactType`` of a signature manifest found through the referrers API (cosign's OCI 1.1
#: mode looks for this one).
SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
_TYPE = "cosign container image signature"


def signature_payload(reference: str, digest: str) -> bytes:
    """The payload cosign signs for ``digest`` pushed as ``reference`` (repository, no tag)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": _TYPE,
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Signature:
    """One signature layer: the payload's bytes and the base64 signature of them."""

    payload: bytes
    signature: str

    def to_json(self) -> dict[str, str]:
        return {"payload": base64.b64encode(self.payload).decode(), "signature": self.signature}

    @classmethod
    def from_json(cls, doc: dict[str, str]) -> Signature:
        return cls(base64.b64decode(doc["payload"]), doc["signature"])

    def signed_digest(self) -> str | None:
        """The manifest digest the payload names; None when it names none."""
        try:
            doc = json.loads(self.payload)
            critical = doc["critical"]
            if critical.get("type") != _TYPE:
                return None
            digest = critical["image"]["docker-manifest-digest"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return digest if isinstance(digest, str) else None


def make_signature(key: PrivateKey, reference: str, digest: str) -> Signature:
    payload = signature_payload(reference, digest)
    return Signature(payload, base64.b64encode(key.sign(payload)).decode())


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking an image's signatures against trusted keys."""

    digest: str
    ok: bool
    #: Ids of the trusted keys that signed this digest.
    signers: tuple[str, ...] = ()
    #: Why not, when not ok: what a refusal says.
    reason: str = ""


def verify_signatures(
    digest: str,
    signatures: Iterable[Signature],
    keys: Sequence[PublicKey],
    *,
    require_all: bool = False,
) -> Verdict:
    """Check ``signatures`` of the manifest ``digest`` against ``keys``.

    Valid means: the signature verifies over the payload with one of ``keys`` and the payload
    names ``digest``. One valid signature by any of the keys suffices (two keys during a
    rotation), or one by each with ``require_all``. The reason of a refusal names the closest
    miss, so an operator can tell a missing signature from an untrusted key from a signature
    of another image.
    """
    if not keys:
        raise SignatureError("no trusted public key given", digest=digest)
    signers: list[str] = []
    seen = 0
    other_digest: str | None = None
    untrusted = 0
    for sig in signatures:
        seen += 1
        try:
            raw = base64.b64decode(sig.signature, validate=True)
        except (binascii.Error, ValueError):
            untrusted += 1
            continue
        key = next((k for k in keys if k.verify(raw, sig.payload)), None)
        if key is None:
            untrusted += 1
            continue
        named = sig.signed_digest()
        if named != digest:
            other_digest = named or "(none)"
            continue
        if key.key_id not in signers:
            signers.append(key.key_id)
    wanted = {k.key_id for k in keys}
    ok = wanted <= set(signers) if require_all else bool(signers)
    if ok:
        return Verdict(digest, True, tuple(signers))
    if require_all and signers:
        missing = sorted(wanted - set(signers))
        reason = f"not signed by every required key (missing {', '.join(missing)})"
    elif seen == 0:
        reason = "unsigned: no signature found"
    elif other_digest is not None:
        reason = f"the only trusted signature is for another digest ({other_digest})"
    else:
        reason = (
            f"{untrusted} signature(s) found, none valid for a trusted key (an untrusted key, "
            "or a tampered signature or payload)"
        )
    return Verdict(digest, False, tuple(signers), reason)
