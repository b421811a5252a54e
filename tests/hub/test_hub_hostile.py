"""The hub tried as an attacker and a careless operator would (issue 8), over real HTTP.

Hostile input gets a 4xx in the spec's JSON error format, never a 500: numbers too large for
SQLite or for ``int()``, a manifest nested 5,000 deep, a descriptor size of 10^29, a signed token
without ``exp``; and a bug still answers in that format. Forwarded headers cannot dodge the login
throttle unless they come from a proxy the operator named; a data directory made 0755 ends up
0700 with the database 0600; a client that stalls its request body cannot hold an upload session.
"""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from kit.hub import RunningHub, push_blob, push_image, sha
from ukedge.hub import Hub, HubSettings

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
    monkeypatch.setattr(hub.hub.overview, "repositories", boom)
    with hub.client() as c:
        r = c.get(f"/v2/edge/app/manifests/{sha(b'x')}")
        assert_error(r, 500, "UNKNOWN")
        assert "RuntimeError" in r.json()["errors"][0]["message"]
    with hub.client() as c:  # Starlette closes the connection after answering an unknown error
        assert_error(c.get("/api/repositories"), 500, "UNKNOWN")
    with hub.client() as c:
        assert c.get("/healthz").status_code == 200


# -- the login throttle and forwarded headers ---------------------------------------------------


def login(hub: RunningHub, password: str, forwarded_for: str) -> int:
    with hub.client() as c:
        r = c.get("/token", auth=("alice", password), headers={"X-Forwarded-For": forwarded_for})
    return r.status_code


def test_forwarded_for_from_an_untrusted_peer_cannot_dodge_the_throttle(hub_factory: Any) -> None:
    hub = hub_factory()
    hub.hub.auth.add_user("alice", "correct horse")
    codes = [login(hub, "wrong guess", f"10.0.0.{i}") for i in range(30)]
    assert codes[:10] == [401] * 10
    assert set(codes[10:]) == {429}
    assert login(hub, "correct horse", "10.0.1.1") == 429


def test_forwarded_for_from_a_trusted_proxy_names_the_client(hub_factory: Any) -> None:
    hub = hub_factory(trusted_proxies=["127.0.0.0/8"])
    hub.hub.auth.add_user("alice", "correct horse")
    assert [login(hub, "wrong guess", "10.0.0.1") for _ in range(11)][-1] == 429
    assert login(hub, "correct horse", "10.0.0.2") == 200  # another client behind the proxy


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValidationError, match="not an IP address or network"):
        HubSettings(trusted_proxies=["proxy.example"])


# -- the data directory ------------------------------------------------------------------------


def test_data_directory_and_database_are_private(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # as an operator's mkdir leaves it, whatever the umask
    (data / "hub.db").touch()
    (data / "hub.db").chmod(0o644)
    hub = Hub(HubSettings(data_dir=data, fsync=False))
    try:
        hub.auth.add_user("alice", "correct horse")
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for f in data.glob("hub.db*"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        hub.close()


# -- a stalled request body ----------------------------------------------------------------------


def test_stalled_body_does_not_hold_the_upload_session(hub_factory: Any) -> None:
    hub = hub_factory(body_timeout=1.0)
    with hub.client() as c:
        location = c.post("/v2/edge/app/blobs/uploads/").headers["Location"]
        host, port = hub.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as stalled:
            stalled.sendall(
                f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Length: {10**12}\r\n\r\nabc".encode()
            )
            # The session stays usable: these wait at most for the body timeout.
            r = c.get(location)
            assert r.status_code == 204
            r = c.patch(location, content=b"hello", headers={"Content-Range": "0-4"})
            assert r.status_code == 202, r.text
            answer = stalled.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b'"SIZE_INVALID"' in answer
            assert c.delete(location).status_code == 204
