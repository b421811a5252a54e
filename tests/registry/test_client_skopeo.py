"""Our pushes are ordinary OCI for other tools, and we pull what they push (skopeo, Debian's)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kit.registry import Distribution, make_image
from ukedge.image import Descriptor, ImageManifest, ImageStore, mediatypes
from ukedge.registry import RegistryClient, pull, push, search

pytestmark = pytest.mark.interop

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (Debian package)")


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert SKOPEO is not None
    result = subprocess.run([SKOPEO, *args], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result


@needs_skopeo
def test_skopeo_copies_what_we_push(distribution: Distribution, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    digest = make_image(store, "app:1")
    remote = f"{distribution.host}/team/app:1"
    with RegistryClient(distribution.host, state_dir=tmp_path / "st") as client:
        push(store, "app:1", remote, client=client)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{remote}").stdout
    assert raw == store.read_blob(digest)
    skopeo("copy", "--src-tls-verify=false", f"docker://{remote}", f"oci:{tmp_path / 'copy'}:app:1")
    copied = ImageStore(tmp_path / "copy")
    assert copied.resolve("app:1").digest == digest
    for layer in store.manifest("app:1")[1].layers:
        copied.verify_blob(layer.digest)


def _container_image(store: ImageStore) -> None:
    """A minimal ordinary container image (tar+gzip layer, OCI image config)."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello from a container layer\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(payload.getvalue()).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"purpose": "interop"}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    with store.lease():
        layer = store.put_bytes(
            gzip.compress(payload.getvalue(), mtime=0),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        cfg = store.put_bytes(
            json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
        )
        manifest = ImageManifest(config=cfg, layers=[layer])
        store.add_manifest(manifest.to_json(), "box:1")


@needs_skopeo
def test_we_pull_a_docker_schema2_image_skopeo_pushed(
    distribution: Distribution, tmp_path: Path
) -> None:
    src = ImageStore(tmp_path / "src")
    _container_image(src)
    remote = f"{distribution.host}/library/box:1"
    skopeo(
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        f"oci:{src.root}:box:1",
        f"docker://{remote}",
    )
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{remote}").stdout
    assert json.loads(raw)["mediaType"] == mediatypes.DOCKER_MANIFEST
    dst = ImageStore(tmp_path / "dst")
    with RegistryClient(distribution.host, state_dir=tmp_path / "st") as client:
        image = pull(dst, remote, client=client)
        hits = search("interop", client=client)  # labels of a container config (config.Labels)
    assert [(h.repository, h.matched) for h in hits] == [
        ("library/box", ("label purpose=interop",))
    ]
    assert image.descriptor.media_type == mediatypes.DOCKER_MANIFEST
    assert dst.read_blob(image.digest) == raw
    for blob in [json.loads(raw)["config"], *json.loads(raw)["layers"]]:
        dst.verify_blob(Descriptor.model_validate(blob).digest)
