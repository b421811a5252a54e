"""Docker token auth over real HTTP: challenges, users, robot tokens, scopes, anonymous pull."""

from __future__ import annotations

import sqlite3
import stat
from typing import Any

import httpx
import pytest

from kit.hub import RunningHub, push_image, sha
from ukedge.errors import UsageError
from ukedge.hub import parse_grant


def token(hub: RunningHub, auth: tuple[str, str] | None, *scopes: str) -> httpx.Response:
    with hub.client() as c:
        return c.get(
            "/token",
            params=[("service", "ukedge-hub"), *[("scope", s) for s in scopes]],
            auth=auth,
        )


def bearer(hub: RunningHub, auth: tuple[str, str] | None, *scopes: str) -> dict[str, str]:
    r = token(hub, auth, *scopes)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def secured(hub_factory: Any) -> RunningHub:
    hub = hub_factory(anonymous_pull=["public/*"])
    hub.hub.auth.add_user("alice", "correct horse")
    return hub


def test_auth_off_until_a_user_exists(hub: RunningHub) -> None:
    with hub.client() as c:
        assert c.get("/v2/").status_code == 200
    hub.hub.auth.add_user("bob", "long enough")
    with hub.client() as c:
        r = c.get("/v2/")
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{hub.url}/token",service="ukedge-hub"'


def test_challenge_names_scope_and_token_flow(secured: RunningHub) -> None:
    with secured.client() as c:
        r = c.get("/v2/team/app/tags/list")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == (
            f'Bearer realm="{secured.url}/token",service="ukedge-hub",'
            'scope="repository:team/app:pull"'
        )
        r = token(secured, ("alice", "correct horse"), "repository:team/app:pull,push")
        body = r.json()
        assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
        assert body["token"] == body["access_token"]
        assert 0 < body["expires_in"] <= 300
        headers = {"Authorization": f"Bearer {body['token']}"}
        c.headers.update(headers)
        assert c.get("/v2/").status_code == 200
        _digest, _ = push_image(c, "team/app", "v1", [b"layer"])
        assert c.get("/v2/team/app/manifests/v1").status_code == 200


def test_bad_credentials(secured: RunningHub) -> None:
    r = token(secured, ("alice", "wrong password"), "repository:team/app:pull")
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    r = token(secured, ("nobody", "whatever1"), "repository:team/app:pull")
    assert r.status_code == 401
    with secured.client() as c:
        r = c.get("/v2/team/app/tags/list", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401


def test_robot_token_cannot_touch_other_repositories(secured: RunningHub) -> None:
    robot = secured.hub.auth.create_robot("ci", ["repository:team/app:pull,push"])
    creds = ("ci", robot.token)
    own = bearer(secured, creds, "repository:team/app:pull,push")
    with secured.client(headers=own) as c:
        digest, _ = push_image(c, "team/app", "v1", [b"robot layer"])
        assert c.get("/v2/team/app/manifests/v1").status_code == 200
        # the same token on another repository: denied for reads and writes
        r = c.get("/v2/team/other/tags/list")
        assert r.status_code == 401
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        assert 'scope="repository:team/other:pull"' in r.headers["WWW-Authenticate"]
        assert c.post("/v2/team/other/blobs/uploads/").status_code == 401
        assert c.delete(f"/v2/team/app/manifests/{digest}").status_code == 401  # no delete
    # asking the token endpoint for the other repository grants nothing usable
    other = bearer(secured, creds, "repository:team/other:pull,push")
    with secured.client(headers=other) as c:
        assert c.get("/v2/team/other/tags/list").status_code == 401
        assert c.get("/v2/team/app/tags/list").status_code == 401
    # and a user token for repository A does not open repository B either
    alice_a = bearer(secured, ("alice", "correct horse"), "repository:team/app:pull")
    with secured.client(headers=alice_a) as c:
        assert c.get("/v2/team/app/tags/list").status_code == 200
        assert c.get(f"/v2/team/other/blobs/{sha(b'x')}").status_code == 401
    # robot tokens work as passwords for any user name, and wrong secrets fail
    assert token(secured, ("anything", robot.token), "repository:team/app:pull").status_code == 200
    assert token(secured, ("ci", robot.token[:-2] + "xx")).status_code == 401


def test_mount_needs_pull_on_source(secured: RunningHub) -> None:
    alice = bearer(secured, ("alice", "correct horse"), "repository:base/os:pull,push")
    with secured.client(headers=alice) as c:
        digest = sha(b"base layer")
        assert (
            c.post(
                "/v2/base/os/blobs/uploads/", params={"digest": digest}, content=b"base layer"
            ).status_code
            == 201
        )
    robot = secured.hub.auth.create_robot("app", ["repository:team/app:pull,push"])
    creds = bearer(
        secured, ("app", robot.token), "repository:team/app:pull,push", "repository:base/os:pull"
    )
    with secured.client(headers=creds) as c:
        r = c.post("/v2/team/app/blobs/uploads/", params={"mount": digest, "from": "base/os"})
        assert r.status_code == 202  # no pull on base/os: an ordinary upload session instead


def test_anonymous_pull_per_namespace(secured: RunningHub) -> None:
    alice = bearer(
        secured,
        ("alice", "correct horse"),
        "repository:public/tools:pull,push",
        "repository:team/app:pull,push",
    )
    with secured.client(headers=alice) as c:
        push_image(c, "public/tools", "1", [b"public"])
        push_image(c, "team/app", "1", [b"private"])
    with secured.client() as c:
        assert c.get("/v2/public/tools/manifests/1").status_code == 200
        assert c.get("/v2/team/app/manifests/1").status_code == 401
        assert c.post("/v2/public/tools/blobs/uploads/").status_code == 401
    anon = token(secured, None, "repository:public/tools:pull,push", "repository:team/app:pull")
    assert anon.status_code == 200
    with secured.client(headers={"Authorization": f"Bearer {anon.json()['token']}"}) as c:
        assert c.get("/v2/public/tools/tags/list").status_code == 200
        assert c.get("/v2/team/app/tags/list").status_code == 401
        assert c.post("/v2/public/tools/blobs/uploads/").status_code == 401
    # the web page shows only what the visitor may pull
    with secured.client() as c:
        names = [r["name"] for r in c.get("/api/repositories").json()]
    assert names == ["public/tools"]


def test_catalog_scope(secured: RunningHub) -> None:
    with secured.client() as c:
        r = c.get("/v2/_catalog")
        assert r.status_code == 401
        assert 'scope="registry:catalog:*"' in r.headers["WWW-Authenticate"]
    headers = bearer(secured, ("alice", "correct horse"), "registry:catalog:*")
    with secured.client(headers=headers) as c:
        assert c.get("/v2/_catalog").status_code == 200


def test_oauth_password_grant(secured: RunningHub) -> None:
    with secured.client() as c:
        r = c.post(
            "/token",
            data={
                "grant_type": "password",
                "username": "alice",
                "password": "correct horse",
                "service": "ukedge-hub",
                "scope": "repository:team/app:pull",
            },
        )
    assert r.status_code == 200
    assert r.json()["access_token"]


def test_expired_token_rejected(hub_factory: Any) -> None:
    hub = hub_factory(token_ttl=10)
    hub.hub.auth.add_user("alice", "correct horse")
    import jwt

    claims = {
        "iss": "ukedge-hub",
        "aud": "ukedge-hub",
        "exp": 1,
        "access": [{"type": "repository", "name": "a", "actions": ["pull"]}],
    }
    stale = jwt.encode(claims, hub.hub.auth.key, algorithm="EdDSA")
    with hub.client(headers={"Authorization": f"Bearer {stale}"}) as c:
        assert c.get("/v2/a/tags/list").status_code == 401
    forged_key = __import__(
        "cryptography.hazmat.primitives.asymmetric.ed25519", fromlist=["x"]
    ).Ed25519PrivateKey.generate()
    claims["exp"] = 2**31
    forged = jwt.encode(claims, forged_key, algorithm="EdDSA")
    with hub.client(headers={"Authorization": f"Bearer {forged}"}) as c:
        assert c.get("/v2/a/tags/list").status_code == 401


def test_key_and_secrets_stored_safely(secured: RunningHub) -> None:
    token(secured, ("alice", "correct horse"))
    key = secured.settings.key_path
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    db = secured.settings.db_path
    for f in (db, db.with_name(db.name + "-wal")):
        if f.exists():
            assert b"correct horse" not in f.read_bytes()
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users WHERE name='alice'").fetchone()
    assert stored.startswith("scrypt$")


def test_grant_parsing() -> None:
    grant = parse_grant("repository:team/*:pull,push")
    assert grant.allows("repository", "team/app", "push")
    assert not grant.allows("repository", "other/app", "pull")
    assert not grant.allows("repository", "team/app", "delete")
    for bad in ("repository:team/app", "repo:x:pull", "repository:x:fly", "repository::pull"):
        with pytest.raises(UsageError):
            parse_grant(bad)


def test_password_guessing_is_throttled(secured: RunningHub) -> None:
    for _ in range(10):
        assert token(secured, ("alice", "wrong guess")).status_code == 401
    r = token(secured, ("alice", "correct horse"))
    assert r.status_code == 429
    assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(r.headers["Retry-After"]) > 0
