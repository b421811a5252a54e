"""Signatures in a registry, where cosign puts and finds them.

One signature manifest serves both ways cosign looks: it names the signed manifest as its
``subject`` with ``artifactType`` ``application/vnd.dev.cosign.artifact.sig.v1+json`` (an OCI
1.1 referrer, which ``cosign verify --experimental-oci11`` and the hub's referrers API find),
and it is tagged ``sha256-<hex>.sig`` (cosign's tag scheme, which plain ``cosign verify``,
containers/image and Kyverno read, and which is all a registry without the referrers API, such
as CNCF distribution 2.8, offers). Its layers are the simple-signing payloads, each with its
signature in an annotation, as cosign writes them.

Signing again (another key, during a rotation) pushes a new manifest holding every earlier
signature plus the new one and moves the tag to it: cosign reads only the newest referrer and
only the tag, so each must hold them all. Earlier referrers stay, and a reader here takes the
union of every referrer and the tag. Two signers racing on a registry without the referrers
API can lose one tag update (the tag is the only record there); sign one key at a time.

Reading never trusts what it reads: a signature counts only once
:func:`~ukedge.image.verify_signatures` checked it against a trusted key and the digest.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass

from ukedge.errors import NotFoundError, RegistryError
from ukedge.image import (
    SIGNATURE_ANNOTATION,
    SIGNATURE_ARTIFACT_TYPE,
    SIMPLE_SIGNING,
    Descriptor,
    ImageIndex,
    ImageManifest,
    PrivateKey,
    PublicKey,
    Signature,
    Verdict,
    digest_bytes,
    digest_hex,
    make_signature,
    mediatypes,
    verify_signatures,
)
from ukedge.registry._client import RegistryClient

__all__ = [
    "SignedManifest",
    "fetch_signatures",
    "sign",
    "sign_image",
    "signature_tag",
    "verify",
    "verify_image",
]

log = logging.getLogger(__name__)

#: A payload is a few hundred bytes; anything larger is not one.
_MAX_PAYLOAD = 64 << 10


def signature_tag(digest: str) -> str:
    """cosign's tag for the signatures of ``digest``: ``sha256-<hex>.sig``."""
    return f"sha256-{digest_hex(digest)}.sig"


@dataclass(frozen=True)
class SignedManifest:
    """One manifest signed: what was signed and where the signatures now are."""

    digest: str
    media_type: str
    signature_manifest: str
    tag: str
    #: False when this key had signed it already (nothing pushed).
    added: bool


def _signature_manifests(client: RegistryClient, repository: str, digest: str) -> list[bytes]:
    found: dict[str, bytes] = {}
    for desc in client.referrers(repository, digest, SIGNATURE_ARTIFACT_TYPE) or []:
        found.setdefault(desc.digest, client.get_manifest(repository, desc.digest).data)
    try:
        tagged = client.get_manifest(repository, signature_tag(digest))
    except NotFoundError:
        pass
    else:
        found.setdefault(tagged.digest, tagged.data)
    return list(found.values())


def fetch_signatures(client: RegistryClient, repository: str, digest: str) -> list[Signature]:
    """Every signature the registry holds for ``digest`` (referrers and the ``.sig`` tag), each
    once; unverified."""
    signatures: dict[tuple[bytes, str], Signature] = {}
    for data in _signature_manifests(client, repository, digest):
        try:
            manifest = ImageManifest.model_validate_json(data)
        except ValueError:
            log.warning("%s: a signature manifest of %s does not parse", repository, digest)
            continue
        for layer in manifest.layers:
            annotation = (layer.annotations or {}).get(SIGNATURE_ANNOTATION)
            if layer.media_type != SIMPLE_SIGNING or not annotation:
                continue
            payload = client.fetch_blob(repository, layer.digest, limit=_MAX_PAYLOAD)
            signatures.setdefault((payload, annotation), Signature(payload, annotation))
    return list(signatures.values())


def _put_blob(client: RegistryClient, repository: str, data: bytes) -> str:
    digest = digest_bytes(data)
    if client.blob_size(repository, digest) is None:
        client.upload_blob(repository, digest, len(data), lambda: io.BytesIO(data))
    return digest


def _signature_manifest(
    client: RegistryClient, repository: str, subject: Descriptor, signatures: list[Signature]
) -> bytes:
    layers = []
    for sig in signatures:
        layers.append(
            Descriptor(
                mediaType=SIMPLE_SIGNING,
                digest=_put_blob(client, repository, sig.payload),
                size=len(sig.payload),
                annotations={SIGNATURE_ANNOTATION: sig.signature},
            )
        )
    # An image config as cosign writes one, so that tools reading the tag as an image can.
    config = json.dumps(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            "config": {},
        },
        separators=(",", ":"),
    ).encode()
    manifest = ImageManifest(
        artifactType=SIGNATURE_ARTIFACT_TYPE,
        config=Descriptor(
            mediaType=SIGNATURE_ARTIFACT_TYPE,
            digest=_put_blob(client, repository, config),
            size=len(config),
        ),
        layers=layers,
        subject=Descriptor(mediaType=subject.media_type, digest=subject.digest, size=subject.size),
    )
    return manifest.to_json()


def _sign_one(
    client: RegistryClient, repository: str, subject: Descriptor, key: PrivateKey
) -> SignedManifest:
    tag = signature_tag(subject.digest)
    existing = fetch_signatures(client, repository, subject.digest)
    if verify_signatures(subject.digest, existing, [key.public]).ok:
        log.info("%s@%s is signed by this key already", repository, subject.digest)
        current = client.head_manifest(repository, tag)
        return SignedManifest(
            subject.digest, subject.media_type, current.digest if current else "", tag, False
        )
    identity = f"{client.registry}/{repository}"
    signatures = [*existing, make_signature(key, identity, subject.digest)]
    data = _signature_manifest(client, repository, subject, signatures)
    digest = client.put_manifest(repository, tag, data, mediatypes.OCI_MANIFEST)
    return SignedManifest(subject.digest, subject.media_type, digest, tag, True)


def sign_image(
    client: RegistryClient, repository: str, reference: str, key: PrivateKey
) -> list[SignedManifest]:
    """Sign the manifest ``reference`` (a tag or digest) names; an index is signed with each
    manifest it lists, so a node that pulls its own platform finds that manifest signed."""
    return [
        _sign_one(client, repository, subject, key)
        for subject in _subjects(client, repository, reference)
    ]


def _subjects(client: RegistryClient, repository: str, reference: str) -> list[Descriptor]:
    remote = client.get_manifest(repository, reference)
    subjects = [remote.descriptor]
    if remote.media_type in mediatypes.INDEX_TYPES:
        try:
            index = ImageIndex.model_validate_json(remote.data)
        except ValueError as exc:
            raise RegistryError(f"{repository}@{remote.digest}: the index does not parse") from exc
        subjects += [
            Descriptor(mediaType=child.media_type, digest=child.digest, size=child.size)
            for child in index.manifests
        ]
    return subjects


def verify_image(
    client: RegistryClient, repository: str, reference: str, keys: list[PublicKey]
) -> list[Verdict]:
    """Verify the manifest ``reference`` names (and, for an index, each manifest it lists)
    against ``keys``: one verdict each, the named manifest first."""
    verdicts = []
    for subject in _subjects(client, repository, reference):
        found = fetch_signatures(client, repository, subject.digest)
        verdicts.append(verify_signatures(subject.digest, found, keys))
    return verdicts


def _remote(reference: str, action: str) -> tuple[str, str, str]:
    """``(registry, repository, tag or digest)`` of a remote image reference."""
    from ukedge.registry._settings import remote_reference

    ref = remote_reference(reference, action=action)
    assert ref.registry is not None
    return ref.registry, ref.repository, ref.reference


def sign(reference: str, key: PrivateKey, *, insecure: bool | None = None) -> list[SignedManifest]:
    """:func:`sign_image` for ``HOST/NAME[:TAG|@DIGEST]`` (``ukedge sign``)."""
    registry, repository, target = _remote(reference, "sign")
    with RegistryClient(registry, insecure=insecure) as client:
        return sign_image(client, repository, target, key)


def verify(reference: str, keys: list[PublicKey], *, insecure: bool | None = None) -> list[Verdict]:
    """:func:`verify_image` for ``HOST/NAME[:TAG|@DIGEST]`` (``ukedge verify``)."""
    registry, repository, target = _remote(reference, "verify")
    with RegistryClient(registry, insecure=insecure) as client:
        return verify_image(client, repository, target, keys)
