"""Kill the hub at every crash point of a state change, restart it, check the invariants.

Each case prepares a data directory with a hub that has no crash point set, then starts
``ukedge hub serve`` with ``UKEDGE_CRASH_POINT`` naming one point, drives the operation that passes
it until the process dies of SIGKILL, and then:

1. runs the invariant checker (:func:`ukedge.hub.run_fsck`, the same code as ``hub fsck``,
   hashing every blob) on the dead hub's data, before anything could repair it;
2. restarts the hub (no crash point), redoes the operation, pulls what should be there, and
   runs the checker again.

Blobs are a few KiB so that all points run in the ordinary suite.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kit.hub import image_manifest, push_blob, sha, start_hub_process
from kit.net import free_port
from ukedge.faults import CRASH_POINT_ENV
from ukedge.hub import HubSettings, run_fsck

REPO = "edge/app"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def layer(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest() * 128  # 4 KiB, distinct per name


@dataclass
class Case:
    """One crash point, the set-up it needs and the operation that passes it."""

    point: str
    setup: Callable[[httpx.Client], None]
    operation: Callable[[httpx.Client], None]
    #: After restart: what must hold once the operation was redone.
    verify: Callable[[httpx.Client], None]
    env: tuple[tuple[str, str], ...] = ()
    name: str = ""


def put_manifest(c: httpx.Client, reference: str, manifest: bytes) -> str:
    r = c.put(
        f"/v2/{REPO}/manifests/{reference}",
        content=manifest,
        headers={"Content-Type": MANIFEST_TYPE},
    )
    assert r.status_code == 201, r.text
    return str(r.headers["Docker-Content-Digest"])


def pull(c: httpx.Client, reference: str) -> bytes:
    """GET a manifest and every blob it names, checking each digest; returns the manifest."""
    r = c.get(f"/v2/{REPO}/manifests/{reference}", headers={"Accept": MANIFEST_TYPE})
    assert r.status_code == 200, r.text
    doc = json.loads(r.content)
    for desc in [doc["config"], *doc["layers"]]:
        blob = c.get(f"/v2/{REPO}/blobs/{desc['digest']}")
        assert blob.status_code == 200, blob.text
        assert sha(blob.content) == desc["digest"]
    return r.content


def chunked_upload(c: httpx.Client, data: bytes) -> None:
    r = c.post(f"/v2/{REPO}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    half = len(data) // 2
    for start, part in ((0, data[:half]), (half, data[half:])):
        r = c.patch(
            location,
            content=part,
            headers={"Content-Range": f"{start}-{start + len(part) - 1}"},
        )
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
    r = c.put(location, params={"digest": sha(data)})
    assert r.status_code == 201, r.text


# -- the cases --------------------------------------------------------------------------------

BLOB = layer("blob")


def nothing(_c: httpx.Client) -> None:
    return None


def verify_blob(c: httpx.Client) -> None:
    r = c.get(f"/v2/{REPO}/blobs/{sha(BLOB)}")
    assert r.status_code == 200 and r.content == BLOB


def blob_case(point: str) -> Case:
    return Case(point, nothing, lambda c: chunked_upload(c, BLOB), verify_blob)


def mono_upload(c: httpx.Client) -> None:
    push_blob(c, REPO, BLOB)


def mono_case(point: str) -> Case:
    return Case(point, nothing, mono_upload, verify_blob, name=f"{point}-monolithic")


def push_v1(c: httpx.Client) -> None:
    put_manifest(c, "t", image_manifest(c, REPO, [layer("v1")]))


def push_v2_blobs(c: httpx.Client) -> None:
    push_v1(c)
    image_manifest(c, REPO, [layer("v2")])  # blobs only


def put_v2(c: httpx.Client) -> None:
    put_manifest(c, "t", image_manifest(c, REPO, [layer("v2")]))


def verify_v2(c: httpx.Client) -> None:
    assert pull(c, "t") == image_manifest(c, REPO, [layer("v2")])


def delete_v1(c: httpx.Client) -> None:
    digest = sha(image_manifest(c, REPO, [layer("v1")]))
    r = c.delete(f"/v2/{REPO}/manifests/{digest}")
    assert r.status_code in (202, 404), r.text  # 404: the first attempt had committed


def verify_deleted(c: httpx.Client) -> None:
    assert c.get(f"/v2/{REPO}/manifests/t").status_code == 404
    digest = sha(image_manifest(c, REPO, [layer("v1")]))
    assert c.get(f"/v2/{REPO}/manifests/{digest}").status_code == 404


def delete_tag(c: httpx.Client) -> None:
    r = c.delete(f"/v2/{REPO}/manifests/t")
    assert r.status_code in (202, 404), r.text


def verify_untagged(c: httpx.Client) -> None:
    assert c.get(f"/v2/{REPO}/manifests/t").status_code == 404
    pull(c, sha(image_manifest(c, REPO, [layer("v1")])))


def garbage(c: httpx.Client) -> None:
    """v1 deleted (its layer is garbage), v2 tagged ``t`` (must survive every sweep)."""
    push_v1(c)
    delete_v1(c)
    put_v2(c)


def gc(c: httpx.Client) -> None:
    r = c.post("/api/gc")
    assert r.status_code == 200, r.text


def verify_swept(c: httpx.Client) -> None:
    verify_v2(c)
    assert c.head(f"/v2/{REPO}/blobs/{sha(layer('v1'))}").status_code == 404


def open_session(c: httpx.Client) -> None:
    r = c.post(f"/v2/{REPO}/blobs/uploads/")
    r = c.patch(r.headers["Location"], content=b"x" * 100)
    assert r.status_code == 202, r.text


GC_ENV = (("UKEDGE_HUB_GC_GRACE", "0"), ("UKEDGE_HUB_UPLOAD_TTL", "0"))

CASES = [
    blob_case("hub.blob.verified"),
    blob_case("hub.blob.after_rename"),
    blob_case("hub.blob.committed"),
    mono_case("hub.blob.after_rename"),
    Case("hub.manifest.put.checked", push_v2_blobs, put_v2, verify_v2),
    Case("hub.manifest.put.stored", push_v2_blobs, put_v2, verify_v2),
    Case("hub.tag.moved", push_v2_blobs, put_v2, verify_v2),
    Case("hub.manifest.put.committed", push_v2_blobs, put_v2, verify_v2),
    Case("hub.manifest.delete.removed", push_v1, delete_v1, verify_deleted),
    Case("hub.manifest.delete.committed", push_v1, delete_v1, verify_deleted),
    Case("hub.tag.deleted", push_v1, delete_tag, verify_untagged),
    Case("hub.gc.row_deleted", garbage, gc, verify_swept, GC_ENV),
    Case("hub.gc.trashed", garbage, gc, verify_swept, GC_ENV),
    Case("hub.gc.removed", garbage, gc, verify_swept, GC_ENV),
    Case("hub.gc.upload_expired", open_session, gc, nothing, GC_ENV),
]


def check_invariants(data: Path) -> None:
    report = run_fsck(HubSettings(data_dir=data, fsync=False), verify=True)
    assert report.ok, report.as_json()


@pytest.fixture
def hub_home(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {"UKEDGE_HOME": str(tmp_path / "home")}


@pytest.mark.parametrize("case", CASES, ids=[c.name or c.point for c in CASES])
def test_crash_point_keeps_invariants(case: Case, tmp_path: Path, hub_home: dict[str, str]) -> None:
    data = tmp_path / "hub"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_hub_process(data, port, env=hub_home)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            case.setup(c)
    finally:
        proc.terminate()
        proc.wait(30)

    env = {**hub_home, CRASH_POINT_ENV: case.point, **dict(case.env)}
    proc = start_hub_process(data, port, env=env)
    try:
        with httpx.Client(base_url=url, timeout=30) as c, pytest.raises(httpx.TransportError):
            case.operation(c)
        assert proc.wait(30) == -signal.SIGKILL, f"{case.point} was not reached"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    check_invariants(data)
    proc = start_hub_process(data, port, env={**hub_home, **dict(case.env)})
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            case.operation(c)
            case.verify(c)
    finally:
        proc.terminate()
        proc.wait(30)
    check_invariants(data)


def test_kill_as_soon_as_the_blob_row_appears(tmp_path: Path, hub_home: dict[str, str]) -> None:
    """The probe of issue 8: kill -9 the moment the blob is in ``hub.db``; HEAD and GET agree.

    With fsync on (the default), the old order (row first, then fsync and rename) left a window
    of the fsync's length in which the row vouched for content that was not in place.
    """
    data = tmp_path / "hub"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    blob = os.urandom(24 * 1024 * 1024)
    digest = sha(blob)
    proc = start_hub_process(data, port, env=hub_home)
    killed = threading.Event()

    def watch() -> None:
        db = sqlite3.connect(f"file:{data / 'hub.db'}?mode=ro", uri=True, timeout=30)
        try:
            while proc.poll() is None:
                if db.execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone():
                    proc.send_signal(signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.0005)
        finally:
            db.close()

    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            location = c.post(f"/v2/{REPO}/blobs/uploads/").headers["Location"]
            step = 8 * 1024 * 1024
            for start in range(0, len(blob), step):
                r = c.patch(
                    location,
                    content=blob[start : start + step],
                    headers={"Content-Range": f"{start}-{min(start + step, len(blob)) - 1}"},
                )
                assert r.status_code == 202, r.text
                location = r.headers["Location"]
            watcher = threading.Thread(target=watch)
            watcher.start()
            with contextlib.suppress(httpx.TransportError):
                c.put(location, params={"digest": digest})
            watcher.join(60)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert killed.is_set(), "the blob's row never appeared"
    check_invariants(data)

    proc = start_hub_process(data, port, env=hub_home)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            head = c.head(f"/v2/{REPO}/blobs/{digest}")
            assert head.status_code == 200
            assert int(head.headers["Content-Length"]) == len(blob)
            got = c.get(f"/v2/{REPO}/blobs/{digest}")
            assert got.status_code == 200, got.text
            assert sha(got.content) == digest
    finally:
        proc.terminate()
        proc.wait(30)


def test_fsck_finds_and_repairs_a_blob_without_content(
    tmp_path: Path, hub_home: dict[str, str]
) -> None:
    """What an older hub (or a lost disk block) left: a row whose file is gone, and a manifest
    that references it. ``hub fsck`` reports both; ``--repair`` drops the blob (HEAD answers 404,
    so a client pushing the image uploads it again) and keeps the manifest; the push repairs it."""
    data = tmp_path / "hub"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_hub_process(data, port, env=hub_home)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            push_v1(c)
    finally:
        proc.terminate()
        proc.wait(30)
    lost = sha(layer("v1"))
    (data / "storage" / "blobs" / "sha256" / lost[7:9] / lost[7:]).unlink()
    exe = Path(sys.executable).with_name("ukedge")
    env = {**os.environ, **hub_home}
    found = subprocess.run(
        [str(exe), "hub", "fsck", "--data", str(data), "--json"],
        capture_output=True,
        env=env,
        check=False,
    )
    assert found.returncode == 1, found.stderr
    kinds = {(p["kind"], p["digest"]) for p in json.loads(found.stdout)["problems"]}
    assert kinds == {("blob-missing", lost), ("manifest-blob-missing", lost)}

    repaired = subprocess.run(
        [str(exe), "hub", "fsck", "--repair", "--data", str(data), "--json"],
        capture_output=True,
        env=env,
        check=False,
    )
    report = json.loads(repaired.stdout)
    assert repaired.returncode == 1  # the manifest still lacks its blob until the image is pushed
    assert [p["kind"] for p in report["problems"] if not p["repaired"]] == ["manifest-blob-missing"]

    proc = start_hub_process(data, port, env=hub_home)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.head(f"/v2/{REPO}/blobs/{lost}").status_code == 404
            push_v1(c)  # what a client's push does after HEAD says 404
            pull(c, "t")
    finally:
        proc.terminate()
        proc.wait(30)
    check_invariants(data)


def test_hub_start_reconciles_metadata_with_storage(
    tmp_path: Path, hub_home: dict[str, str]
) -> None:
    """``hub serve`` runs the size check with repair before it listens: a blob whose content is
    gone is not vouched for by HEAD after a restart."""
    data = tmp_path / "hub"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_hub_process(data, port, env=hub_home)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            push_blob(c, REPO, BLOB)
    finally:
        proc.terminate()
        proc.wait(30)
    digest = sha(BLOB)
    (data / "storage" / "blobs" / "sha256" / digest[7:9] / digest[7:]).unlink()
    proc = start_hub_process(data, port, env=hub_home)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.head(f"/v2/{REPO}/blobs/{digest}").status_code == 404
            push_blob(c, REPO, BLOB)
            verify_blob(c)
    finally:
        proc.terminate()
        proc.wait(30)
    check_invariants(data)
