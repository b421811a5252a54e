"""Signing and verifying images in real registries: the hub (OCI 1.1 referrers API) and Debian's
docker-registry (CNCF distribution 2.8, no referrers API: cosign's ``.sig`` tag alone)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.hub import RunningHub, run_hub
from kit.registry import Distribution, make_image, run_distribution
from ukedge.errors import DigestMismatchError
from ukedge.image import (
    SIGNATURE_ARTIFACT_TYPE,
    SIMPLE_SIGNING,
    Descriptor,
    ImageIndex,
    ImageManifest,
    ImageStore,
    PrivateKey,
    generate_private_key,
    mediatypes,
)
from ukedge.registry import (
    RegistryClient,
    fetch_signatures,
    pull,
    push,
    sign_image,
    signature_tag,
    verify_image,
)
from ukedge.registry._signatures import _signature_manifest


@pytest.fixture(params=["hub", pytest.param("distribution", marks=pytest.mark.interop)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningHub | Distribution]:
    if request.param == "hub":
        with run_hub(tmp_path / "hub", auth="off") as hub:
            yield hub
    else:
        with run_distribution(tmp_path / "distribution") as dist:
            yield dist


#: A test of one registry only (``registry`` is then that one).
_ON_HUB = pytest.mark.parametrize("registry", ["hub"], indirect=True)
_ON_DISTRIBUTION = pytest.mark.parametrize("registry", ["distribution"], indirect=True)


@pytest.fixture
def client(registry: RunningHub | Distribution, tmp_path: Path) -> Iterator[RegistryClient]:
    with RegistryClient(registry.host, insecure=True, state_dir=tmp_path / "state") as c:
        yield c


def _pushed(client: RegistryClient, tmp_path: Path, tag: str = "1") -> str:
    store = ImageStore(tmp_path / f"src-{tag}")
    make_image(store, "app:x")
    return push(store, "app:x", f"{client.registry}/team/app:{tag}", client=client)


@pytest.fixture
def key() -> PrivateKey:
    return generate_private_key()


def test_sign_then_verify_and_where_the_signature_lives(
    client: RegistryClient, key: PrivateKey, tmp_path: Path
) -> None:
    digest = _pushed(client, tmp_path)
    [signed] = sign_image(client, "team/app", "1", key)
    assert signed.digest == digest and signed.added
    [verdict] = verify_image(client, "team/app", "1", [key.public])
    assert verdict.ok and verdict.signers == (key.public.key_id,)
    # cosign's tag scheme on every registry...
    tagged = ImageManifest.model_validate_json(
        client.get_manifest("team/app", signature_tag(digest)).data
    )
    assert tagged.subject is not None and tagged.subject.digest == digest
    assert tagged.artifact_type == SIGNATURE_ARTIFACT_TYPE
    assert [layer.media_type for layer in tagged.layers] == [SIMPLE_SIGNING]
    assert client.get_manifest("team/app", signature_tag(digest)).digest == (
        signed.signature_manifest
    )
    # Signing again with the same key adds nothing.
    [again] = sign_image(client, "team/app", digest, key)
    assert not again.added
    assert len(fetch_signatures(client, "team/app", digest)) == 1


@_ON_HUB
def test_the_hub_serves_signatures_as_referrers(
    client: RegistryClient, tmp_path: Path, key: PrivateKey
) -> None:
    digest = _pushed(client, tmp_path)
    [signed] = sign_image(client, "team/app", "1", key)
    referrers = client.referrers("team/app", digest, SIGNATURE_ARTIFACT_TYPE)
    assert referrers is not None
    assert [d.digest for d in referrers] == [signed.signature_manifest]


@pytest.mark.interop
@_ON_DISTRIBUTION
def test_distribution_has_no_referrers_api_so_the_tag_carries_it(
    client: RegistryClient, tmp_path: Path, key: PrivateKey
) -> None:
    digest = _pushed(client, tmp_path)
    assert client.referrers("team/app", digest, SIGNATURE_ARTIFACT_TYPE) is None
    sign_image(client, "team/app", "1", key)
    assert verify_image(client, "team/app", "1", [key.public])[0].ok


def test_missing_signature_and_untrusted_key(
    client: RegistryClient, key: PrivateKey, tmp_path: Path
) -> None:
    _pushed(client, tmp_path)
    [unsigned] = verify_image(client, "team/app", "1", [key.public])
    assert not unsigned.ok and unsigned.reason.startswith("unsigned")
    sign_image(client, "team/app", "1", generate_private_key())
    [untrusted] = verify_image(client, "team/app", "1", [key.public])
    assert not untrusted.ok and "none valid for a trusted key" in untrusted.reason


def test_rotation_two_keys_both_signatures_kept(
    client: RegistryClient, key: PrivateKey, tmp_path: Path
) -> None:
    digest = _pushed(client, tmp_path)
    new = generate_private_key()
    sign_image(client, "team/app", "1", key)
    sign_image(client, "team/app", "1", new)
    # cosign reads only the tag (or the newest referrer): it must hold both signatures.
    tagged = ImageManifest.model_validate_json(
        client.get_manifest("team/app", signature_tag(digest)).data
    )
    assert len(tagged.layers) == 2
    for keys in ([key.public], [new.public], [key.public, new.public]):
        assert verify_image(client, "team/app", "1", keys)[0].ok
    both = verify_image(client, "team/app", "1", [key.public, new.public])[0]
    assert set(both.signers) == {key.public.key_id, new.public.key_id}


def test_a_signature_copied_onto_another_image_is_refused(
    client: RegistryClient, key: PrivateKey, tmp_path: Path
) -> None:
    signed = _pushed(client, tmp_path, "1")
    other = _pushed(client, tmp_path, "2")
    sign_image(client, "team/app", "1", key)
    stolen = fetch_signatures(client, "team/app", signed)
    head = client.head_manifest("team/app", other)
    assert head is not None
    subject = Descriptor(mediaType=mediatypes.OCI_MANIFEST, digest=other, size=head.size)
    data = _signature_manifest(client, "team/app", subject, stolen)
    client.put_manifest("team/app", signature_tag(other), data, mediatypes.OCI_MANIFEST)
    [verdict] = verify_image(client, "team/app", "2", [key.public])
    assert not verdict.ok and "another digest" in verdict.reason and signed in verdict.reason


def test_a_tampered_manifest_or_layer_under_the_signed_tag_is_unsigned(
    client: RegistryClient, key: PrivateKey, tmp_path: Path
) -> None:
    store = ImageStore(tmp_path / "src")
    make_image(store, "app:x")
    push(store, "app:x", f"{client.registry}/team/app:1", client=client)
    sign_image(client, "team/app", "1", key)
    assert verify_image(client, "team/app", "1", [key.public])[0].ok
    # Someone with push rights replaces the tag: same config, one layer swapped.
    image, manifest = store.manifest("app:x")
    with store.lease():
        evil = store.put_bytes(os.urandom(2048), mediatypes.INITRD_GZIP)
        tampered = manifest.model_copy(update={"layers": [*manifest.layers[:-1], evil]})
        store.add_manifest(tampered.to_json(), "app:evil")
    push(store, "app:evil", f"{client.registry}/team/app:1", client=client)
    [verdict] = verify_image(client, "team/app", "1", [key.public])
    assert not verdict.ok and verdict.reason.startswith("unsigned")
    # A changed annotation is a changed manifest too.
    with store.lease():
        store.add_manifest(
            manifest.model_copy(update={"annotations": {"x": "y"}}).to_json(), "app:ann"
        )
    push(store, "app:ann", f"{client.registry}/team/app:1", client=client)
    assert not verify_image(client, "team/app", "1", [key.public])[0].ok
    assert image.digest != verdict.digest


@pytest.mark.interop
@_ON_DISTRIBUTION
def test_a_layer_tampered_in_storage_is_caught_by_its_digest(
    client: RegistryClient, registry: Distribution, tmp_path: Path, key: PrivateKey
) -> None:
    dist = registry
    store = ImageStore(tmp_path / "src")
    make_image(store, "app:x")
    push(store, "app:x", f"{dist.host}/team/app:1", client=client)
    sign_image(client, "team/app", "1", key)
    _, manifest = store.manifest("app:x")
    layer = manifest.layers[-1].digest.split(":")[1]
    data = next(_distribution_blob(dist, layer))
    data.write_bytes(os.urandom(2048))
    # The signature still verifies (it signs the manifest)...
    assert verify_image(client, "team/app", "1", [key.public])[0].ok
    # ...and the layer's digest, which the signed manifest pins, refuses the bytes.
    dst = ImageStore(tmp_path / "dst")
    with pytest.raises(DigestMismatchError):
        pull(dst, f"{dist.host}/team/app:1", client=client)
    assert not dst.images()


def _distribution_blob(dist: Distribution, hex_digest: str) -> Iterator[Path]:
    yield from dist.root.rglob(f"blobs/sha256/{hex_digest[:2]}/{hex_digest}/data")


def test_an_index_is_signed_with_each_platform_manifest(
    client: RegistryClient, key: PrivateKey, tmp_path: Path
) -> None:
    children = []
    for tag, arch in (("amd", "amd64"), ("arm", "arm64")):
        digest = _pushed(client, tmp_path, tag)
        head = client.head_manifest("team/app", digest)
        assert head is not None
        children.append(
            Descriptor.model_validate(
                {
                    "mediaType": mediatypes.OCI_MANIFEST,
                    "digest": digest,
                    "size": head.size,
                    "platform": {"os": "linux", "architecture": arch},
                }
            )
        )
    index = ImageIndex(manifests=children).to_json()
    client.put_manifest("team/app", "multi", index, mediatypes.OCI_INDEX)
    signed = sign_image(client, "team/app", "multi", key)
    assert [s.digest for s in signed][1:] == [c.digest for c in children]
    assert signed[0].media_type == mediatypes.OCI_INDEX
    verdicts = verify_image(client, "team/app", "multi", [key.public])
    assert len(verdicts) == 3 and all(v.ok for v in verdicts)
    # A node pulling one platform finds that manifest signed on its own.
    assert verify_image(client, "team/app", children[1].digest, [key.public])[0].ok
