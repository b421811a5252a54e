"""Signing keys in cosign's file formats, so that a key made by ``cosign generate-key-pair``
signs with ukedge and a key made by ``ukedge key generate`` signs with cosign.

* Public keys: PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo), ECDSA P-256 (what cosign generates)
  or Ed25519.
* Private keys: PEM ``ENCRYPTED SIGSTORE PRIVATE KEY`` (cosign ≥ 2; ``ENCRYPTED COSIGN PRIVATE
  KEY`` from older releases reads the same). Its body is the JSON of go-securesystemslib's
  ``encrypted`` package: the PKCS #8 DER of the key sealed with NaCl ``secretbox``
  (XSalsa20-Poly1305, PyNaCl) under a key that scrypt (N=65536, r=8, p=1) derives from the
  password. An empty password is allowed, as cosign allows it. A plain PKCS #8 ``PRIVATE KEY``
  or ``EC PRIVATE KEY`` PEM (``cosign import-key-pair``'s input) is read too.

The key id is the SHA-256 of the public key's DER, so the same key has the same id wherever
its PEM came from (line breaks and headers do not count).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ukedge.errors import UsageError

__all__ = [
    "PrivateKey",
    "PublicKey",
    "decrypt_private_key",
    "encrypt_private_key",
    "generate_private_key",
    "read_public_keys",
    "write_key_pair",
]

_ENCRYPTED_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_WRITE_TYPE = _ENCRYPTED_TYPES[0]
#: cosign's (go-securesystemslib's) scrypt cost: 64 MiB and ~0.1-0.3 s per unlock.
_SCRYPT = {"N": 65536, "r": 8, "p": 1}

_Public = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
_Private = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _pem_body(text: bytes, kind: str) -> bytes | None:
    begin, end = f"-----BEGIN {kind}-----".encode(), f"-----END {kind}-----".encode()
    start = text.find(begin)
    if start < 0:
        return None
    stop = text.find(end, start)
    if stop < 0:
        return None
    return base64.b64decode(b"".join(text[start + len(begin) : stop].split()))


@dataclass(frozen=True)
class PublicKey:
    """A key whose signatures a verifier trusts."""

    key: _Public
    #: Where it came from (a file name), for messages.
    source: str = ""

    @classmethod
    def from_pem(cls, data: bytes, source: str = "") -> PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise UsageError(
                f"{source or 'the key'} is not a PEM public key (-----BEGIN PUBLIC KEY-----): {exc}"
            ) from None
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            return cls(key, source)
        if isinstance(key, ed25519.Ed25519PublicKey):
            return cls(key, source)
        raise UsageError(
            f"{source or 'the key'} is a {type(key).__name__}; signatures use ECDSA P-256 or "
            "Ed25519 keys (`ukedge key generate`, `cosign generate-key-pair`)"
        )

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def key_id(self) -> str:
        der = self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256:" + hashlib.sha256(der).hexdigest()

    def verify(self, signature: bytes, payload: bytes) -> bool:
        """Whether ``signature`` (ASN.1 DER for ECDSA, as cosign writes it) signs ``payload``."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, payload)
            else:
                self.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    key: _Private

    def sign(self, payload: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(payload)
        return self.key.sign(payload, ec.ECDSA(hashes.SHA256()))

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    @classmethod
    def from_pem(cls, data: bytes, password: bytes, source: str = "") -> PrivateKey:
        """A private key file: cosign's encrypted PEM, or a plain PKCS #8 / SEC 1 PEM."""
        for kind in _ENCRYPTED_TYPES:
            body = _pem_body(data, kind)
            if body is not None:
                return cls(decrypt_private_key(body, password, source))
        try:
            key = serialization.load_pem_private_key(data, None)
        except (ValueError, TypeError) as exc:
            raise UsageError(
                f"{source or 'the key'} is not a private key ukedge reads (ENCRYPTED SIGSTORE "
                f"PRIVATE KEY, PRIVATE KEY or EC PRIVATE KEY PEM): {exc}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) or (
            isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1)
        ):
            raise UsageError(f"{source or 'the key'}: only ECDSA P-256 and Ed25519 keys sign")
        return cls(key)


def generate_private_key() -> PrivateKey:
    """A new ECDSA P-256 key, the kind ``cosign generate-key-pair`` makes."""
    return PrivateKey(ec.generate_private_key(ec.SECP256R1()))


def _scrypt_key(password: bytes, salt: bytes, params: dict[str, Any]) -> bytes:
    return Scrypt(salt=salt, length=32, n=params["N"], r=params["r"], p=params["p"]).derive(
        password
    )


def encrypt_private_key(key: PrivateKey, password: bytes) -> bytes:
    """The PEM ``cosign`` writes to ``cosign.key``."""
    import nacl.secret  # loads libsodium; only key files need it

    der = key.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = os.urandom(32)
    nonce = os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_scrypt_key(password, salt, _SCRYPT))
    sealed = box.encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {"name": "scrypt", "params": _SCRYPT, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    body = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        f"-----BEGIN {_WRITE_TYPE}-----\n" + "\n".join(lines) + f"\n-----END {_WRITE_TYPE}-----\n"
    ).encode()


def decrypt_private_key(body: bytes, password: bytes, source: str = "") -> _Private:
    """The key sealed in an encrypted PEM's ``body``; a wrong password is a UsageError."""
    import nacl.exceptions
    import nacl.secret

    where = source or "the private key"
    try:
        doc = json.loads(body)
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise UsageError(
                f"{where}: unsupported encryption {kdf['name']}/{cipher['name']} "
                "(cosign writes scrypt/nacl/secretbox)"
            )
        params = {k: int(kdf["params"][k]) for k in ("N", "r", "p")}
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        sealed = base64.b64decode(doc["ciphertext"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{where} is not an encrypted cosign key: {exc}") from None
    try:
        der = nacl.secret.SecretBox(_scrypt_key(password, salt, params)).decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError:
        raise UsageError(
            f"wrong password for {where} (set UKEDGE_KEY_PASSWORD or COSIGN_PASSWORD, or type it)"
        ) from None
    key = serialization.load_der_private_key(der, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise UsageError(f"{where}: only ECDSA P-256 and Ed25519 keys sign")
    return key


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write ``path`` whole or not at all (a temporary name, renamed); refuse to replace an
    existing file unless ``force``."""
    if path.exists() and not force:
        raise UsageError(f"{path} exists; choose another --output-key-prefix or pass --force")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_key_pair(prefix: Path, password: bytes, *, force: bool = False) -> tuple[Path, Path]:
    """A new key pair as cosign lays it out: ``PREFIX.key`` (encrypted, mode 0600) and
    ``PREFIX.pub``; returns both paths."""
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    for path in (key_path, pub_path):
        if path.exists() and not force:
            raise UsageError(f"{path} exists; choose another --output-key-prefix or pass --force")
    key = generate_private_key()
    _write_new(key_path, encrypt_private_key(key, password), 0o600, force)
    _write_new(pub_path, key.public.pem(), 0o644, force)
    return key_path, pub_path


def read_public_keys(paths: list[Path]) -> list[PublicKey]:
    keys = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the public key {path}: {exc.strerror}") from None
        keys.append(PublicKey.from_pem(data, str(path)))
    return keys
