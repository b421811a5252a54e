"""Credentials file, challenge parsing and registry settings (no network)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ukedge.errors import UsageError
from ukedge.registry import (
    Credentials,
    CredentialStore,
    RegistryClient,
    credentials_for,
    is_insecure,
    parse_challenge,
    registry_url,
    remote_reference,
)


def test_challenge_with_quoted_commas_and_several_scopes() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:team/app:pull,push repository:base:pull",error="insufficient_scope"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params["realm"] == "https://auth.example/token"
    assert challenge.params["service"] == "registry.example"
    assert challenge.scopes == ["repository:team/app:pull,push", "repository:base:pull"]
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic" and basic.scopes == []
    assert parse_challenge("") is None


def test_credentials_file_is_0600_and_replaced_atomically(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "cfg" / "auth.json")
    store.set("hub.example:5000", Credentials("alice", "s3cret:with:colons"))
    store.set("other.example", Credentials("bob", "pw"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.get("hub.example:5000") == Credentials("alice", "s3cret:with:colons")
    assert store.registries() == ["hub.example:5000", "other.example"]
    assert [p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert store.remove("other.example") is True
    assert store.remove("other.example") is False
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert repr(store.get("hub.example:5000")) == "Credentials(username='alice')"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CredentialStore(tmp_path / "auth.json")
    store.set("hub.example", Credentials("alice", "pw"))
    assert credentials_for("hub.example", store) == Credentials("alice", "pw")
    monkeypatch.setenv("UKEDGE_REGISTRY_USER", "ci")
    monkeypatch.setenv("UKEDGE_REGISTRY_PASSWORD", "token")
    assert credentials_for("hub.example", store) == Credentials("ci", "token")
    assert credentials_for("elsewhere.example", store) == Credentials("ci", "token")


def test_auth_file_location_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UKEDGE_AUTH_FILE", str(tmp_path / "x.json"))
    assert CredentialStore().path == tmp_path / "x.json"


def test_unreadable_credentials_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text("{not json")
    with pytest.raises(UsageError, match="remove it and log in again"):
        CredentialStore(path).get("hub.example")
    path.write_text('{"auths": {"hub.example": {"auth": "bm9jb2xvbg=="}}}')  # "nocolon"
    with pytest.raises(UsageError, match=r"ukedge login hub\.example"):
        CredentialStore(path).get("hub.example")


def test_plain_http_only_for_loopback_or_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert registry_url("localhost:5000") == "http://localhost:5000"
    assert registry_url("[::1]:5000") == "http://[::1]:5000"
    assert registry_url("hub.example:5000") == "https://hub.example:5000"
    assert registry_url("hub.example:5000", insecure=True) == "http://hub.example:5000"
    assert not is_insecure("lab.example:5000")
    monkeypatch.setenv("UKEDGE_INSECURE_REGISTRIES", "lab.example:5000, other.example")
    assert is_insecure("lab.example:5000")
    assert is_insecure("127.0.0.1:5000", insecure=False) is False


def test_remote_reference_needs_a_host_or_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert remote_reference("hub.example/team/app:1").registry == "hub.example"
    with pytest.raises(UsageError, match=r"push needs HOST\[:PORT\]/NAME:TAG .*UKEDGE_REGISTRY"):
        remote_reference("team/app:1", action="push")
    monkeypatch.setenv("UKEDGE_REGISTRY", "http://hub.example:5000/")
    assert str(remote_reference("team/app:1")) == "hub.example:5000/team/app:1"


def test_client_for_a_url() -> None:
    with RegistryClient.for_url("http://127.0.0.1:5000") as client:
        assert (client.registry, client.base_url) == ("127.0.0.1:5000", "http://127.0.0.1:5000")
    with RegistryClient.for_url("https://hub.example") as client:
        assert (client.registry, client.base_url) == ("hub.example", "https://hub.example")
    with RegistryClient.for_url("http://hub.example:8080/") as client:
        assert client.base_url == "http://hub.example:8080"
    with RegistryClient.for_url("http://[::1]:5000") as client:
        assert client.registry == "[::1]:5000"
    with pytest.raises(UsageError, match="not a registry URL"):
        RegistryClient.for_url("ftp://hub.example")


def test_default_registry_must_be_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UKEDGE_REGISTRY", "myhub")
    with pytest.raises(UsageError, match="not a registry host"):
        remote_reference("app:1")
    monkeypatch.setenv("UKEDGE_REGISTRY", "localhost")
    assert remote_reference("app:1").registry == "localhost"
