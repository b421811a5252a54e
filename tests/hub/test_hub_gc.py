"""Online GC: sweeps what no manifest references, keeps the rest, and races safely with pushes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from typing import Any

import httpx

from kit.hub import RunningHub, image_manifest, push_blob, push_image, sha
from ukedge.hub import run_gc


def blob_file(hub: RunningHub, digest: str) -> Any:
    hexpart = digest.split(":")[1]
    return hub.settings.data_dir / "storage" / "blobs" / "sha256" / hexpart[:2] / hexpart


def gc(hub: RunningHub, **kwargs: Any) -> Any:
    return asyncio.run(hub.hub.gc(**kwargs))


def test_sweeps_unreferenced_keeps_referenced(hub_factory: Any) -> None:
    hub = hub_factory(gc_grace=0)
    with hub.client() as c:
        digest, manifest = push_image(c, "app", "1", [b"kept layer"])
        orphan = push_blob(c, "app", b"orphan")
    report = gc(hub, dry_run=True)
    assert report.blobs == [orphan]
    assert blob_file(hub, orphan).exists()
    report = gc(hub)
    assert report.blobs == [orphan]
    assert report.bytes_freed == len(b"orphan")
    assert not blob_file(hub, orphan).exists()
    with hub.client() as c:
        assert c.head(f"/v2/app/blobs/{orphan}").status_code == 404
        for layer in json.loads(manifest)["layers"]:
            assert c.get(f"/v2/app/blobs/{layer['digest']}").content == b"kept layer"
        # deleting the manifest makes its blobs collectable
        assert c.delete(f"/v2/app/manifests/{digest}").status_code == 202
    report = gc(hub)
    assert sha(b"kept layer") in report.blobs
    assert not blob_file(hub, sha(b"kept layer")).exists()


def test_grace_period_protects_fresh_blobs(hub_factory: Any) -> None:
    hub = hub_factory(gc_grace=3600)
    with hub.client() as c:
        orphan = push_blob(c, "app", b"fresh orphan")
    assert gc(hub).blobs == []
    assert blob_file(hub, orphan).exists()


def test_expires_abandoned_uploads(hub_factory: Any) -> None:
    hub = hub_factory(upload_ttl=0)
    with hub.client() as c:
        location = c.post("/v2/app/blobs/uploads/").headers["Location"]
        c.patch(location, content=b"partial")
        report = gc(hub)
        assert location.rsplit("/", 1)[1] in report.uploads
        assert c.get(location).status_code == 404


def test_cli_entry_point_runs_against_live_data(hub_factory: Any) -> None:
    hub = hub_factory(gc_grace=0)
    with hub.client() as c:
        orphan = push_blob(c, "app", b"cli orphan")
    report = run_gc(hub.settings.model_copy(update={"gc_grace": 0.0}))
    assert orphan in report.blobs
    with hub.client() as c:
        assert c.head(f"/v2/app/blobs/{orphan}").status_code == 404


def _put(c: httpx.Client, repo: str, tag: str, manifest: bytes) -> httpx.Response:
    return c.put(
        f"/v2/{repo}/manifests/{tag}",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )


def test_pushes_during_gc_lose_nothing(hub_factory: Any) -> None:
    """GC loops with a short grace while eight clients push images sharing layers.

    Each client uploads its blobs, waits a random time (often past the grace, so its blobs
    become candidates), then PUTs the manifest. Either the PUT wins (the blobs stay) or the GC
    wins (MANIFEST_BLOB_UNKNOWN; the client uploads again, as registry clients do). What must
    never happen: an accepted manifest whose blobs are gone or corrupt.
    """
    hub: RunningHub = hub_factory(gc_grace=1.0)
    shared = [os.urandom(300_000), os.urandom(200_000)]
    stop = threading.Event()
    swept: list[str] = []
    errors: list[BaseException] = []
    results: dict[str, tuple[str, str, bytes]] = {}
    gc_won = []

    def collector() -> None:
        with hub.client() as c:
            while not stop.is_set():
                r = c.post("/api/gc")
                if r.status_code != 200:
                    errors.append(AssertionError(r.text))
                    return
                swept.extend(r.json()["blobs_swept"])

    def pusher(i: int) -> None:
        rng = random.Random(i)
        repo = f"team/app{i % 2}"
        try:
            with hub.client() as c:
                for round_ in range(3):
                    push_blob(c, repo, os.urandom(1000))  # garbage for the GC
                    tag = f"v{i}-{round_}"
                    layers = [*shared, f"{i}-{round_}".encode()]
                    manifest = image_manifest(c, repo, layers)
                    time.sleep(rng.uniform(0, 2.0))
                    for _ in range(30):
                        r = _put(c, repo, tag, manifest)
                        if r.status_code == 201:
                            break
                        assert r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", r.text
                        gc_won.append(tag)
                        manifest = image_manifest(c, repo, layers)
                    assert r.status_code == 201
                    results[tag] = (repo, r.headers["Docker-Content-Digest"], manifest)
        except BaseException as exc:
            errors.append(exc)

    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    pushers = [threading.Thread(target=pusher, args=(i,)) for i in range(8)]
    for t in pushers:
        t.start()
    for t in pushers:
        t.join()
    stop.set()
    gc_thread.join()
    assert not errors, errors
    assert swept, "the GC should have swept the garbage blobs"
    time.sleep(1.1)
    gc(hub)  # one more pass past the grace: must not touch referenced blobs
    with hub.client() as c:
        for tag, (repo, _digest, manifest) in results.items():
            assert c.get(f"/v2/{repo}/manifests/{tag}").content == manifest
            for layer in json.loads(manifest)["layers"]:
                r = c.get(f"/v2/{repo}/blobs/{layer['digest']}")
                assert r.status_code == 200, (tag, layer)
                assert sha(r.content) == layer["digest"]
    assert len(results) == 24


def test_removes_stray_content_left_by_a_crash(hub_factory: Any) -> None:
    hub: RunningHub = hub_factory(gc_grace=60)
    stray = blob_file(hub, sha(b"stray"))
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"stray")
    old = time.time() - 7200
    os.utime(stray, (old, old))
    fresh = blob_file(hub, sha(b"fresh stray"))
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"fresh stray")
    report = gc(hub)
    assert sha(b"stray") in report.blobs
    assert not stray.exists()
    assert fresh.exists()  # younger than the grace: maybe an upload in flight
