"""cosign's key-pair signature format: read what cosign wrote, write what cosign reads.

The vectors (``vectors/``, see its README) were made by cosign itself; matching them byte for
byte (the payload) and verifying its signatures and its encrypted key file is the proof of
interoperability available without the cosign binary, which no package source here ships.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ukedge.errors import SignatureError, UsageError
from ukedge.image import (
    PrivateKey,
    PublicKey,
    Signature,
    digest_bytes,
    encrypt_private_key,
    generate_private_key,
    make_signature,
    signature_payload,
    verify_signatures,
)

VECTORS = Path(__file__).parent / "vectors"


def _public(name: str) -> PublicKey:
    return PublicKey.from_pem((VECTORS / name).read_bytes(), name)


def _cosign_signature(name: str) -> Signature:
    doc = json.loads((VECTORS / name).read_text())
    return Signature(
        base64.b64decode(doc["payload"]), doc["annotations"]["dev.cosignproject.cosign/signature"]
    )


COSIGN_DIGEST = digest_bytes((VECTORS / "cosign-valid-manifest.json").read_bytes())


def test_a_signature_cosign_made_verifies_with_its_key() -> None:
    verdict = verify_signatures(
        COSIGN_DIGEST, [_cosign_signature("cosign-valid.json")], [_public("cosign.pub")]
    )
    assert verdict.ok, verdict.reason
    assert verdict.signers == (_public("cosign.pub").key_id,)


def test_a_cosign_signature_with_a_rekor_bundle_verifies_by_its_key_alone() -> None:
    """Offline: the transparency-log bundle is not needed to check the key's signature."""
    digest = digest_bytes((VECTORS / "cosign2-rekor-manifest.json").read_bytes())
    sig = _cosign_signature("cosign2-rekor-valid.json")
    assert verify_signatures(digest, [sig], [_public("cosign2.pub")]).ok
    assert not verify_signatures(digest, [sig], [_public("cosign.pub")]).ok


def test_our_payload_is_byte_for_byte_the_one_cosign_signs() -> None:
    theirs = _cosign_signature("cosign-valid.json").payload
    ours = signature_payload("192.168.64.2:5000/cosign-signed-single-sample", COSIGN_DIGEST)
    assert ours == theirs


def test_a_modified_manifest_is_not_covered_by_the_signature() -> None:
    modified = digest_bytes((VECTORS / "cosign-modified-manifest.json").read_bytes())
    verdict = verify_signatures(
        modified, [_cosign_signature("cosign-valid.json")], [_public("cosign.pub")]
    )
    assert not verdict.ok
    assert "another digest" in verdict.reason and COSIGN_DIGEST in verdict.reason


def test_a_signature_by_another_key_is_untrusted() -> None:
    verdict = verify_signatures(
        COSIGN_DIGEST, [_cosign_signature("unknown-cosign-key.json")], [_public("cosign.pub")]
    )
    assert not verdict.ok
    assert "none valid for a trusted key" in verdict.reason
    # cosign2.pub did not make the valid one either.
    assert not verify_signatures(
        COSIGN_DIGEST, [_cosign_signature("cosign-valid.json")], [_public("cosign2.pub")]
    ).ok


def test_two_trusted_keys_accept_either_signature_and_all_needs_both() -> None:
    """A rotation: the old key (cosign's vector) and a new one are both trusted."""
    new = PrivateKey.from_pem((VECTORS / "cosign-empty-password.key").read_bytes(), b"")
    keys = [_public("cosign.pub"), new.public]
    old_sig = _cosign_signature("cosign-valid.json")
    new_sig = make_signature(new, "192.168.64.2:5000/cosign-signed-single-sample", COSIGN_DIGEST)
    for sig in (old_sig, new_sig):
        assert verify_signatures(COSIGN_DIGEST, [sig], keys).ok
    one = verify_signatures(COSIGN_DIGEST, [old_sig], keys, require_all=True)
    assert not one.ok and "missing" in one.reason
    both = verify_signatures(COSIGN_DIGEST, [old_sig, new_sig], keys, require_all=True)
    assert both.ok and set(both.signers) == {k.key_id for k in keys}


def test_a_tampered_signature_or_payload_fails() -> None:
    good = _cosign_signature("cosign-valid.json")
    key = [_public("cosign.pub")]
    raw = bytearray(base64.b64decode(good.signature))
    raw[-1] ^= 1
    flipped = Signature(good.payload, base64.b64encode(bytes(raw)).decode())
    assert not verify_signatures(COSIGN_DIGEST, [flipped], key).ok
    payload = good.payload.replace(b"cosign-signed", b"cosign-forged")
    assert not verify_signatures(COSIGN_DIGEST, [Signature(payload, good.signature)], key).ok
    assert not verify_signatures(COSIGN_DIGEST, [Signature(good.payload, "%%%")], key).ok


def test_no_signature_is_unsigned() -> None:
    verdict = verify_signatures(COSIGN_DIGEST, [], [_public("cosign.pub")])
    assert not verdict.ok and verdict.reason.startswith("unsigned")
    with pytest.raises(SignatureError, match="no trusted public key"):
        verify_signatures(COSIGN_DIGEST, [], [])


def test_cosigns_encrypted_key_file_decrypts_and_signs() -> None:
    key = PrivateKey.from_pem((VECTORS / "cosign-empty-password.key").read_bytes(), b"")
    assert key.public.key_id == _public("cosign-empty-password.pub").key_id
    sig = make_signature(key, "example.org/app", COSIGN_DIGEST)
    assert verify_signatures(COSIGN_DIGEST, [sig], [_public("cosign-empty-password.pub")]).ok
    with pytest.raises(UsageError, match="wrong password"):
        PrivateKey.from_pem((VECTORS / "cosign-empty-password.key").read_bytes(), b"nope")


def test_a_key_we_write_reads_back_in_cosigns_format() -> None:
    key = generate_private_key()
    pem = encrypt_private_key(key, b"s3cret")
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    body = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    doc = json.loads(body)
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert doc["cipher"]["name"] == "nacl/secretbox"
    again = PrivateKey.from_pem(pem, b"s3cret")
    assert again.public.key_id == key.public.key_id


def test_a_public_key_file_that_is_not_one_is_refused() -> None:
    with pytest.raises(UsageError, match="not a PEM public key"):
        PublicKey.from_pem(b"hello", "k.pub")
