"""Every /v2/ endpoint and its error paths, over real HTTP against a running hub."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from kit.hub import RunningHub, image_manifest, push_blob, push_image, sha

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body["errors"][0]) >= {"code", "message", "detail"}
    return str(body["errors"][0]["code"])


def test_base_endpoint(client: httpx.Client) -> None:
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_and_post_put_uploads(client: httpx.Client) -> None:
    data = os.urandom(100_000)
    digest = push_blob(client, "team/app", data)
    r = client.head(f"/v2/team/app/blobs/{digest}")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/team/app/blobs/{digest}").content == data

    other = os.urandom(5000)
    r = client.post("/v2/team/app/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["Docker-Upload-UUID"]
    r = client.put(r.headers["Location"], params={"digest": sha(other)}, content=other)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/team/app/blobs/{sha(other)}"
    assert client.get(f"/v2/team/app/blobs/{sha(other)}").content == other


def test_monolithic_wrong_digest_stores_nothing(client: httpx.Client) -> None:
    r = client.post(
        "/v2/a/blobs/uploads/", params={"digest": sha(b"expected")}, content=b"something else"
    )
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    assert client.head(f"/v2/a/blobs/{sha(b'something else')}").status_code == 404
    assert client.head(f"/v2/a/blobs/{sha(b'expected')}").status_code == 404


def test_chunked_upload_status_and_out_of_order(client: httpx.Client) -> None:
    data = os.urandom(300_000)
    r = client.post("/v2/team/app/blobs/uploads/")
    location = r.headers["Location"]
    uuid = r.headers["Docker-Upload-UUID"]
    r = client.patch(
        location,
        content=data[:100_000],
        headers={"Content-Range": "0-99999", "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 202
    assert r.headers["Range"] == "0-99999"
    location = r.headers["Location"]
    # a chunk that skips ahead
    r = client.patch(location, content=data[150_000:], headers={"Content-Range": "150000-299999"})
    assert r.status_code == 416
    # status says where to continue
    r = client.get(location)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-99999"
    assert r.headers["Docker-Upload-UUID"] == uuid
    assert r.headers["Location"].endswith(uuid)
    r = client.patch(
        location, content=data[100_000:200_000], headers={"Content-Range": "100000-199999"}
    )
    assert r.status_code == 202
    r = client.put(location, params={"digest": sha(data)}, content=data[200_000:])
    assert r.status_code == 201
    assert client.get(f"/v2/team/app/blobs/{sha(data)}").content == data
    # finished session is gone
    assert client.get(location).status_code == 404


def test_streamed_patch_without_content_range(client: httpx.Client) -> None:
    data = os.urandom(70_000)
    location = client.post("/v2/s/blobs/uploads/").headers["Location"]

    def gen():  # type: ignore[no-untyped-def]
        for i in range(0, len(data), 7000):
            yield data[i : i + 7000]

    r = client.patch(location, content=gen())
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    assert client.put(location, params={"digest": sha(data)}).status_code == 201


def test_upload_errors(client: httpx.Client) -> None:
    location = client.post("/v2/e/blobs/uploads/").headers["Location"]
    client.patch(location, content=b"abc")
    r = client.put(location, params={"digest": sha(b"abd")})
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    assert client.get(location).status_code == 404  # a failed commit cancels the upload

    location = client.post("/v2/e/blobs/uploads/").headers["Location"]
    r = client.put(location)
    assert error_code(r) == "DIGEST_INVALID"
    r = client.put(location, params={"digest": "sha256:nothex"})
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    assert client.delete(location).status_code == 204
    r = client.get(location)
    assert r.status_code == 404
    assert error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    r = client.patch("/v2/e/blobs/uploads/not-a-session", content=b"x")
    assert error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    # a session belongs to its repository
    location = client.post("/v2/e/blobs/uploads/").headers["Location"]
    uuid = location.rsplit("/", 1)[1]
    assert error_code(client.get(f"/v2/other/blobs/uploads/{uuid}")) == "BLOB_UPLOAD_UNKNOWN"
    # the declared length must match
    r = client.post(
        "/v2/e/blobs/uploads/",
        params={"digest": sha(b"abc")},
        content=b"abc",
        headers={"Content-Length": "3"},
    )
    assert r.status_code == 201


def test_range_reads(client: httpx.Client) -> None:
    data = bytes(range(256)) * 40
    digest = push_blob(client, "r", data)
    r = client.get(f"/v2/r/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = client.get(f"/v2/r/blobs/{digest}", headers={"Range": "bytes=10000-"})
    assert r.content == data[10000:]
    r = client.get(f"/v2/r/blobs/{digest}", headers={"Range": "bytes=-5"})
    assert r.content == data[-5:]
    r = client.get(f"/v2/r/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_blob_unknown_and_delete(client: httpx.Client) -> None:
    r = client.get(f"/v2/r/blobs/{sha(b'nope')}")
    assert r.status_code == 404
    assert error_code(r) == "BLOB_UNKNOWN"
    assert client.head(f"/v2/r/blobs/{sha(b'nope')}").status_code == 404
    digest = push_blob(client, "r", b"to delete")
    assert client.delete(f"/v2/r/blobs/{digest}").status_code == 202
    assert client.head(f"/v2/r/blobs/{digest}").status_code == 404
    assert error_code(client.delete(f"/v2/r/blobs/{digest}")) == "BLOB_UNKNOWN"
    assert error_code(client.get("/v2/r/blobs/sha256:123")) == "DIGEST_INVALID"


def test_blob_only_readable_where_uploaded(client: httpx.Client) -> None:
    digest = push_blob(client, "private/one", b"secret layer")
    assert client.head(f"/v2/private/two/blobs/{digest}").status_code == 404


def test_cross_repository_mount(client: httpx.Client) -> None:
    digest = push_blob(client, "base/os", b"shared layer")
    r = client.post("/v2/team/app/blobs/uploads/", params={"mount": digest, "from": "base/os"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/team/app/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/team/app/blobs/{digest}").content == b"shared layer"
    # not mountable: fall back to an upload session
    r = client.post(
        "/v2/team/app/blobs/uploads/", params={"mount": sha(b"absent"), "from": "base/os"}
    )
    assert r.status_code == 202
    assert r.headers["Docker-Upload-UUID"]


def test_manifest_put_get_head_by_tag_and_digest(client: httpx.Client) -> None:
    digest, manifest = push_image(client, "team/app", "v1", [b"layer-a", b"layer-b"])
    assert digest == sha(manifest)
    for ref in ("v1", digest):
        r = client.get(f"/v2/team/app/manifests/{ref}")
        assert r.status_code == 200
        assert r.content == manifest
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == digest
        r = client.head(f"/v2/team/app/manifests/{ref}")
        assert r.status_code == 200
        assert r.headers["Content-Length"] == str(len(manifest))
        assert r.content == b""
    r = client.get("/v2/team/app/manifests/v2")
    assert r.status_code == 404
    assert error_code(r) == "MANIFEST_UNKNOWN"
    assert client.head("/v2/team/app/manifests/v2").status_code == 404
    # a reference no PUT could have made is simply unknown (the conformance suite asks this)
    for method in ("GET", "HEAD", "DELETE"):
        r = client.request(method, "/v2/team/app/manifests/.INVALID_MANIFEST_NAME")
        assert r.status_code == 404


def test_manifest_put_by_digest(client: httpx.Client) -> None:
    manifest = image_manifest(client, "d", [b"l"])
    r = client.put(
        f"/v2/d/manifests/{sha(manifest)}",
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/d/manifests/{sha(manifest)}"
    r = client.put(
        f"/v2/d/manifests/{sha(b'other')}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"


def test_manifest_validation(client: httpx.Client) -> None:
    def put(body: bytes, ctype: str = OCI_MANIFEST, ref: str = "t") -> httpx.Response:
        return client.put(f"/v2/v/manifests/{ref}", content=body, headers={"Content-Type": ctype})

    assert error_code(put(b"not json")) == "MANIFEST_INVALID"
    assert error_code(put(b'{"schemaVersion": 1}')) == "MANIFEST_INVALID"
    manifest = json.loads(image_manifest(client, "v", [b"x"]))
    missing = dict(manifest, layers=[{"mediaType": "x/y", "digest": sha(b"absent"), "size": 6}])
    r = put(json.dumps(missing).encode())
    assert r.status_code == 404
    assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert error_code(put(json.dumps(manifest).encode(), ctype=OCI_INDEX)) == "MANIFEST_INVALID"
    weird = dict(manifest, mediaType="application/x-unknown")
    assert error_code(put(json.dumps(weird).encode(), ctype="application/x-unknown")) == (
        "MANIFEST_INVALID"
    )
    assert error_code(put(json.dumps(manifest).encode(), ref="bad:tag!")) in (
        "MANIFEST_INVALID",
        "DIGEST_INVALID",
    )
    assert error_code(put(json.dumps(manifest).encode(), ref="-bad")) == "MANIFEST_INVALID"
    r = put(b"{" + b" " * (4 * 1024 * 1024) + b"}")
    assert r.status_code == 413
    assert error_code(r) == "SIZE_INVALID"
    assert put(json.dumps(manifest).encode()).status_code == 201


def test_docker_schema2_and_indexes(client: httpx.Client) -> None:
    config = b'{"architecture":"amd64"}'
    layer = b"docker layer"
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": push_blob(client, "dock", config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": push_blob(client, "dock", layer),
                "size": len(layer),
            }
        ],
    }
    body = json.dumps(doc).encode()
    r = client.put(
        "/v2/dock/manifests/amd64", content=body, headers={"Content-Type": DOCKER_MANIFEST}
    )
    assert r.status_code == 201
    assert client.get("/v2/dock/manifests/amd64").headers["Content-Type"] == DOCKER_MANIFEST
    child = {"mediaType": DOCKER_MANIFEST, "digest": sha(body), "size": len(body)}
    for media_type in (DOCKER_LIST, OCI_INDEX):
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": media_type, "manifests": [child]}
        ).encode()
        r = client.put(
            "/v2/dock/manifests/multi", content=index, headers={"Content-Type": media_type}
        )
        assert r.status_code == 201, r.text
        assert client.get("/v2/dock/manifests/multi").headers["Content-Type"] == media_type
    ghost = dict(child, digest=sha(b"no such manifest"))
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [ghost]}).encode()
    r = client.put("/v2/dock/manifests/bad", content=index, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 404
    assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"


def test_manifest_delete_by_tag_and_digest(client: httpx.Client) -> None:
    digest, _ = push_image(client, "del", "a", [b"1"])
    push_image(client, "del", "b", [b"1"])  # same content, second tag
    assert client.delete("/v2/del/manifests/a").status_code == 202
    assert client.get("/v2/del/manifests/a").status_code == 404
    assert client.get(f"/v2/del/manifests/{digest}").status_code == 200
    assert client.delete(f"/v2/del/manifests/{digest}").status_code == 202
    assert client.get("/v2/del/manifests/b").status_code == 404
    r = client.delete(f"/v2/del/manifests/{digest}")
    assert r.status_code == 404
    assert error_code(r) == "MANIFEST_UNKNOWN"
    assert error_code(client.delete(f"/v2/nowhere/manifests/{digest}")) == "NAME_UNKNOWN"


def test_tags_pagination_with_link(client: httpx.Client) -> None:
    for tag in ["c", "a", "e", "b", "d"]:
        push_image(client, "pag", tag, [b"x"])
    assert client.get("/v2/pag/tags/list").json() == {"name": "pag", "tags": list("abcde")}
    r = client.get("/v2/pag/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    assert r.headers["Link"] == '</v2/pag/tags/list?n=2&last=b>; rel="next"'
    r = client.get(r.headers["Link"].split(";")[0].strip("<>"))
    assert r.json()["tags"] == ["c", "d"]
    r = client.get("/v2/pag/tags/list", params={"n": 2, "last": "d"})
    assert r.json()["tags"] == ["e"]
    assert "Link" not in r.headers
    assert client.get("/v2/pag/tags/list", params={"n": 0}).json()["tags"] == []
    r = client.get("/v2/unknown/tags/list")
    assert r.status_code == 404
    assert error_code(r) == "NAME_UNKNOWN"


def test_catalog_pagination(client: httpx.Client) -> None:
    for repo in ["z/app", "a/app", "m/app"]:
        push_image(client, repo, "1", [b"x"])
    push_blob(client, "blobs-only", b"x")  # no manifest: not listed
    assert client.get("/v2/_catalog").json() == {"repositories": ["a/app", "m/app", "z/app"]}
    r = client.get("/v2/_catalog", params={"n": 1})
    assert r.json() == {"repositories": ["a/app"]}
    assert r.headers["Link"] == '</v2/_catalog?n=1&last=a%2Fapp>; rel="next"'
    r = client.get("/v2/_catalog", params={"n": 5, "last": "a/app"})
    assert r.json() == {"repositories": ["m/app", "z/app"]}


def test_referrers_and_filter(client: httpx.Client) -> None:
    subject_digest, subject = push_image(client, "ref", "v1", [b"app"])
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
    empty = b"{}"
    sig_type = "application/vnd.dev.cosign.artifact.sig.v1+json"
    sbom_type = "application/spdx+json"
    for artifact, layer in ((sig_type, b"signature"), (sbom_type, b"sbom")):
        doc = json.loads(
            image_manifest(
                client, "ref", [layer], config=empty, artifact_type=artifact, subject=subject_desc
            )
        )
        doc["config"]["mediaType"] = "application/vnd.oci.empty.v1+json"
        body = json.dumps(doc).encode()
        r = client.put(
            f"/v2/ref/manifests/{sha(body)}", content=body, headers={"Content-Type": OCI_MANIFEST}
        )
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject_digest
    r = client.get(f"/v2/ref/referrers/{subject_digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2
    assert {m["artifactType"] for m in index["manifests"]} == {sig_type, sbom_type}
    assert "OCI-Filters-Applied" not in r.headers
    r = client.get(f"/v2/ref/referrers/{subject_digest}", params={"artifactType": sbom_type})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["artifactType"] for m in r.json()["manifests"]] == [sbom_type]
    r = client.get(f"/v2/ref/referrers/{sha(b'nothing refers')}")
    assert r.status_code == 200
    assert r.json()["manifests"] == []
    # an index with a subject and an artifactType is a referrer too
    index_body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/x-bundle",
            "manifests": [subject_desc],
            "subject": subject_desc,
        }
    ).encode()
    r = client.put(
        "/v2/ref/manifests/bundle", content=index_body, headers={"Content-Type": OCI_INDEX}
    )
    assert r.headers["OCI-Subject"] == subject_digest
    r = client.get(
        f"/v2/ref/referrers/{subject_digest}", params={"artifactType": "application/x-bundle"}
    )
    assert r.json()["manifests"][0]["mediaType"] == OCI_INDEX


def test_names_validated(client: httpx.Client) -> None:
    for bad in ("UPPER/case", "a//b", "-lead", "a/b_"):
        r = client.get(f"/v2/{bad}/tags/list")
        assert r.status_code in (400, 404)
        if r.status_code == 400:
            assert error_code(r) == "NAME_INVALID"
    r = client.get("/v2/UPPER/tags/list")
    assert error_code(r) == "NAME_INVALID"
    r = client.get("/v2/" + "a" * 256 + "/tags/list")
    assert error_code(r) == "NAME_INVALID"


def test_unsupported_method(client: httpx.Client) -> None:
    r = client.post("/v2/x/manifests/latest")
    assert r.status_code == 405
    assert error_code(r) == "UNSUPPORTED"


def test_ops_endpoints(hub: RunningHub, client: httpx.Client) -> None:
    push_image(client, "ops", "1", [b"x"])
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics").text
    assert (
        'ukedge_hub_requests_total{method="PUT",'
        'route="/v2/{name}/manifests/{reference}",status="201"} 1.0' in metrics
    )
    assert "ukedge_hub_received_bytes_total" in metrics
    assert "ukedge_hub_uploads_in_progress" in metrics
    schema = client.get("/openapi.json").json()
    assert {"/token", "/healthz", "/api/repositories"} <= set(schema["paths"])
    repos = client.get("/api/repositories").json()
    assert repos[0]["name"] == "ops"
    assert repos[0]["tags"][0]["tag"] == "1"


@pytest.mark.parametrize("workers", [8])
def test_concurrent_pushes_sharing_layers(hub: RunningHub, workers: int) -> None:
    """Eight clients push images sharing two big layers: no blob is corrupt or missing."""
    import threading

    shared = [os.urandom(2 * 1024 * 1024), os.urandom(1024 * 1024)]
    errors: list[BaseException] = []
    results: dict[int, tuple[str, bytes]] = {}

    def push(i: int) -> None:
        try:
            with hub.client() as c:
                results[i] = push_image(c, f"team/app{i % 3}", f"v{i}", [*shared, os.urandom(1000)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with hub.client() as c:
        for i, (_digest, manifest) in results.items():
            repo = f"team/app{i % 3}"
            assert c.get(f"/v2/{repo}/manifests/v{i}").content == manifest
            for layer in json.loads(manifest)["layers"]:
                blob = c.get(f"/v2/{repo}/blobs/{layer['digest']}").content
                assert sha(blob) == layer["digest"]
    assert list((hub.settings.data_dir / "storage" / "_tmp").iterdir()) == []


def test_web_page_escapes_what_pushers_control(client: httpx.Client) -> None:
    push_image(
        client, "web/app", "v1", [b"x"], artifact_type="application/x-<script>alert(1)</script>"
    )
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<script>alert(1)" not in page.text
    assert "&lt;script&gt;alert(1)" in page.text
    assert 'data-repository="web/app"' in page.text


def test_empty_blob(client: httpx.Client) -> None:
    """Zero-byte layers exist in the wild (and in the conformance suite)."""
    empty = push_blob(client, "empty", b"")
    r = client.get(f"/v2/empty/blobs/{empty}")
    assert (r.status_code, r.content, r.headers["Content-Length"]) == (200, b"", "0")
    location = client.post("/v2/empty/blobs/uploads/").headers["Location"]
    assert client.put(location, params={"digest": empty}).status_code == 201
    assert client.post("/v2/other/blobs/uploads/", params={"mount": empty}).status_code == 202
