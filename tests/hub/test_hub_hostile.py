"""Hostile input over real HTTP: every probe gets a 4xx in the spec's JSON error format, none a 500.

The probes are those of issue 8 (numbers too large for SQLite or for ``int()``, a manifest nested
5,000 deep, a descriptor size of 10^29, a signed token without ``exp``), plus what a bug would
answer: any exception no handler knows still gets the JSON error body.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import pytest
from hub_fixtures import RunningHub, push_blob, push_image, sha

HUGE = "9" * 5000  # past int()'s 4,300-digit limit
INT64_MAX = str(2**63 - 1)


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["errors"][0]["code"] == code


@pytest.mark.parametrize("n", [INT64_MAX, HUGE, "10001", "²", "-1", "1e3"])
def test_page_size_out_of_range(client: httpx.Client, n: str) -> None:
    push_image(client, "edge/app", "v1", [b"layer"])
    for path in ("/v2/_catalog", "/v2/edge/app/tags/list"):
        assert_error(client.get(path, params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")
    assert client.get("/v2/edge/app/tags/list", params={"n": "10000"}).json()["tags"] == ["v1"]


def test_huge_numbers_in_range_headers(client: httpx.Client) -> None:
    digest = push_blob(client, "edge/app", b"content")
    r = client.get(f"/v2/edge/app/blobs/{digest}", headers={"Range": f"bytes={HUGE}-"})
    assert_error(r, 416, "RANGE_INVALID")
    r = client.get(f"/v2/edge/app/blobs/{digest}", headers={"Range": f"bytes=0-{HUGE}"})
    assert_error(r, 416, "RANGE_INVALID")
    location = client.post("/v2/edge/app/blobs/uploads/").headers["Location"]
    for value in (f"0-{HUGE}", f"{HUGE}-{HUGE}", f"0-{INT64_MAX}0"):
        r = client.patch(location, content=b"abc", headers={"Content-Range": value})
        assert_error(r, 416, "RANGE_INVALID")
    # The session is unharmed: a proper chunk still goes in at 0.
    r = client.patch(location, content=b"abc", headers={"Content-Range": "0-2"})
    assert r.status_code == 202


def manifest_with(config: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [],
        }
    ).encode()


def test_descriptor_size_beyond_int64(client: httpx.Client) -> None:
    digest = push_blob(client, "edge/app", b"{}")
    for size in (10**29, 2**63):
        body = manifest_with(
            {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest,
                "size": size,
            }
        )
        r = client.put(
            "/v2/edge/app/manifests/v1",
            content=body,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert_error(r, 400, "MANIFEST_INVALID")


def test_manifest_nested_5000_deep(client: httpx.Client) -> None:
    body = b'{"schemaVersion": 2, "annotations": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = client.put(
        "/v2/edge/app/manifests/v1",
        content=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert_error(r, 400, "MANIFEST_INVALID")


def test_signed_token_without_exp_is_refused_every_time(hub_factory: Any) -> None:
    hub = hub_factory()
    hub.hub.auth.add_user("alice", "correct horse")
    claims = {
        "iss": "ukedge-hub",
        "aud": "ukedge-hub",
        "iat": 1,
        "access": [{"type": "repository", "name": "a", "actions": ["pull"]}],
    }
    forever = jwt.encode(claims, hub.hub.auth.key, algorithm="EdDSA")
    with hub.client(headers={"Authorization": f"Bearer {forever}"}) as c:
        for _ in range(2):
            assert_error(c.get("/v2/a/tags/list"), 401, "UNAUTHORIZED")


def test_a_bug_still_answers_the_json_error(hub: RunningHub, monkeypatch: Any) -> None:
    def boom(*_args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(hub.hub.manifests, "get", boom)
    monkeypatch.setattr(hub.hub.manifests, "overview", boom)
    with hub.client() as c:
        r = c.get(f"/v2/edge/app/manifests/{sha(b'x')}")
        assert_error(r, 500, "UNKNOWN")
        assert "RuntimeError" in r.json()["errors"][0]["message"]
    with hub.client() as c:  # Starlette closes the connection after answering an unknown error
        assert_error(c.get("/api/repositories"), 500, "UNKNOWN")
    with hub.client() as c:
        assert c.get("/healthz").status_code == 200
