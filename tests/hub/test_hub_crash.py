"""SIGKILL the hub in the middle of a chunked upload, restart it, resume: the image is intact."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import httpx

from kit.hub import push_blob, sha, start_hub_process
from kit.net import free_port


def test_sigkill_during_chunked_upload_then_resume(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    blob = os.urandom(6 * 1024 * 1024 + 123)
    chunk = 1024 * 1024
    proc = start_hub_process(data, port)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            location = c.post("/v2/edge/app/blobs/uploads/").headers["Location"]
            for offset in (0, chunk):
                r = c.patch(
                    location,
                    content=blob[offset : offset + chunk],
                    headers={"Content-Range": f"{offset}-{offset + chunk - 1}"},
                )
                assert r.status_code == 202
                location = r.headers["Location"]

            # The third chunk is being streamed when the hub is killed.
            def dying_body():  # type: ignore[no-untyped-def]
                yield blob[2 * chunk : 2 * chunk + chunk // 2]
                time.sleep(0.3)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                yield blob[2 * chunk + chunk // 2 : 3 * chunk]

            with contextlib.suppress(httpx.HTTPError):
                c.patch(location, content=dying_body())
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()

    proc = start_hub_process(data, port)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.get(location)
            assert r.status_code == 204
            offset = int(r.headers["Range"].split("-")[1]) + 1
            assert 2 * chunk <= offset <= 3 * chunk  # what reached the disk counts
            r = c.patch(
                location,
                content=blob[offset:],
                headers={"Content-Range": f"{offset}-{len(blob) - 1}"},
            )
            assert r.status_code == 202
            r = c.put(r.headers["Location"], params={"digest": sha(blob)})
            assert r.status_code == 201, r.text
            config = push_blob(c, "edge/app", b'{"architecture":"amd64","os":"linux"}')
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": config,
                        "size": 37,
                    },
                    "layers": [
                        {
                            "mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": sha(blob),
                            "size": len(blob),
                        }
                    ],
                }
            ).encode()
            r = c.put(
                "/v2/edge/app/manifests/1",
                content=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
            assert r.status_code == 201, r.text
            assert c.get("/v2/edge/app/manifests/1").content == manifest
            pulled = hashlib.sha256()
            with c.stream("GET", f"/v2/edge/app/blobs/{sha(blob)}") as r:
                for part in r.iter_bytes():
                    pulled.update(part)
            assert "sha256:" + pulled.hexdigest() == sha(blob)
    finally:
        proc.terminate()
        proc.wait(10)
