"""Third-party clients against the hub: skopeo, the oras Python SDK, headless Chromium."""

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

from kit.browser import CHROMIUM, dump_dom
from kit.hub import RunningHub, push_image

pytestmark = pytest.mark.interop


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_oci_layout(layout: Path) -> bytes:
    """A tiny but real OCI image layout (one gzip tar layer); returns its manifest."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        payload = b"hello from a unikernel hub test\n" * 100
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layer = gzip.compress(tar_bytes.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(tar_bytes.getvalue()).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "config": {},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **_blob(layout, config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, layer)}
            ],
        }
    ).encode()
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(layout, manifest)}
    desc["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return manifest


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (Debian package skopeo)")
def test_skopeo_copy_in_and_out(hub: RunningHub, tmp_path: Path) -> None:
    manifest = make_oci_layout(tmp_path / "src")
    host = hub.url.removeprefix("http://")
    policy = tmp_path / "policy.json"
    policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
    base = ["skopeo", "--policy", str(policy), "--insecure-policy"]
    subprocess.run(
        [
            *base,
            "copy",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'src'}:v1",
            f"docker://{host}/skopeo/hello:v1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with hub.client() as c:
        assert c.get("/v2/skopeo/hello/manifests/v1").content == manifest
    out = subprocess.run(
        [*base, "inspect", "--tls-verify=false", "--raw", f"docker://{host}/skopeo/hello:v1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert out.stdout == manifest
    subprocess.run(
        [
            *base,
            "copy",
            "--src-tls-verify=false",
            f"docker://{host}/skopeo/hello:v1",
            f"oci:{tmp_path / 'dst'}:v1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for blob in (tmp_path / "src" / "blobs" / "sha256").iterdir():
        assert (tmp_path / "dst" / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()
    # skopeo's tag listing goes through /tags/list
    out = subprocess.run(
        [*base, "list-tags", "--tls-verify=false", f"docker://{host}/skopeo/hello"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert json.loads(out.stdout)["Tags"] == ["v1"]


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (Debian package skopeo)")
def test_skopeo_with_token_auth(hub_factory: object, tmp_path: Path) -> None:
    hub: RunningHub = hub_factory()  # type: ignore[operator]
    hub.hub.auth.add_user("alice", "correct horse")
    make_oci_layout(tmp_path / "src")
    host = hub.url.removeprefix("http://")
    cmd = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false"]
    denied = subprocess.run(
        [*cmd, f"oci:{tmp_path / 'src'}:v1", f"docker://{host}/secure/hello:v1"],
        capture_output=True,
        timeout=120,
    )
    assert denied.returncode != 0
    subprocess.run(
        [
            *cmd,
            "--dest-creds",
            "alice:correct horse",
            f"oci:{tmp_path / 'src'}:v1",
            f"docker://{host}/secure/hello:v1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with hub.client() as c:
        assert c.get("/v2/secure/hello/manifests/v1").status_code == 401


def test_oras_sdk_push_and_pull(
    hub: RunningHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oras_client = pytest.importorskip("oras.client")
    host = hub.url.removeprefix("http://")
    artifact = tmp_path / "payload.txt"
    artifact.write_text("an artifact pushed by oras\n" * 50)
    monkeypatch.chdir(tmp_path)
    client = oras_client.OrasClient(hostname=host, insecure=True)
    response = client.push(files=[artifact.name], target=f"{host}/oras/artifact:v1")
    assert response.status_code == 201
    out = tmp_path / "out"
    files = client.pull(target=f"{host}/oras/artifact:v1", outdir=str(out))
    assert [Path(f).read_text() for f in files] == [artifact.read_text()]
    assert "v1" in client.get_tags(f"{host}/oras/artifact")


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (Debian package chromium)")
def test_web_page_in_headless_chromium(hub: RunningHub, tmp_path: Path) -> None:
    with hub.client() as c:
        digest, manifest = push_image(c, "team/sensor-agg", "1.0", [b"app layer"])
        subject = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": len(manifest),
        }
        push_image(
            c,
            "team/sensor-agg",
            "sig",
            [b"signature"],
            artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
            subject=subject,
        )
        push_image(c, "plain/app", "latest", [b"y"])
    result = dump_dom(hub.url + "/", tmp_path / "chromium")
    dom = result.stdout
    assert 'data-repository="team/sensor-agg"' in dom, result.stderr[-2000:]
    assert 'data-repository="plain/app"' in dom
    assert 'data-tag="1.0"' in dom
    assert 'data-tag="latest"' in dom
    row = dom.split('data-tag="1.0"', 1)[1].split("</tr>", 1)[0]
    assert ">signed<" in row
    row = dom.split('data-tag="latest"', 1)[1].split("</tr>", 1)[0]
    assert ">none<" in row
