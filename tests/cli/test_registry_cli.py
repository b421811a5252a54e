"""The registry commands as a user runs them, through the ``ukedge`` entry point."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kit.cli import Run
from kit.hub import RunningHub, run_hub
from kit.registry import Distribution, distribution, make_image
from ukedge.image import ImageStore
from ukedge.paths import store_dir

__all__ = ["distribution"]  # a fixture, re-exported for pytest

pytestmark = pytest.mark.interop


@pytest.fixture
def secured_hub(tmp_path: Path) -> Iterator[RunningHub]:
    with run_hub(tmp_path / "hub", auth="on") as hub:
        hub.hub.auth.add_user("alice", "correct-horse")
        yield hub


def test_push_pull_tags_search(distribution: Distribution, ukedge: Callable[..., Run]) -> None:
    host = distribution.host
    store = ImageStore(store_dir())
    digest = make_image(store, "sensor:1", kernel=os.urandom(300_000), labels={"tier": "edge"})

    pushed = ukedge("push", "sensor:1", f"{host}/team/sensor:1")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == digest
    assert "3 uploaded" in pushed.stderr

    again = ukedge("push", "sensor:1", f"{host}/team/sensor:1", "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["digest"] == digest
    assert result["target"] == f"{host}/team/sensor:1"
    assert {b["outcome"] for b in result["blobs"]} == {"exists"}

    store.remove("sensor:1")
    pulled = ukedge("pull", f"{host}/team/sensor:1", "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["ref"] == f"{host}/team/sensor:1"
    assert store.resolve(f"{host}/team/sensor:1").digest == digest

    tags = ukedge("tags", f"{host}/team/sensor", "--json")
    assert json.loads(tags.stdout) == ["1"]
    found = ukedge("search", "edge", "--registry", host, "--json")
    assert [h["repository"] for h in json.loads(found.stdout)] == ["team/sensor"]
    table = ukedge("search", "sensor", "--registry", host)
    assert "team/sensor" in table.stdout and "name" in table.stdout


def test_push_without_registry_explains_the_choices(ukedge: Callable[..., Run]) -> None:
    make_image(ImageStore(store_dir()), "app:1")
    result = ukedge("push", "app:1")
    assert result.returncode == 2
    assert "push needs HOST[:PORT]/NAME:TAG" in result.stderr
    assert "UKEDGE_REGISTRY" in result.stderr


def test_login_and_logout(
    secured_hub: RunningHub, ukedge_home: Path, ukedge: Callable[..., Run]
) -> None:
    host = secured_hub.host
    bad = ukedge("login", host, "-u", "alice", "--password-stdin", stdin="nope\n")
    assert bad.returncode == 1
    assert "refused a token" in bad.stderr
    assert not (ukedge_home / "auth.json").exists()

    good = ukedge("login", host, "-u", "alice", "--password-stdin", stdin="correct-horse\n")
    assert good.returncode == 0, good.stderr
    assert "Login succeeded" in good.stderr
    auth = ukedge_home / "auth.json"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert host in json.loads(auth.read_text())["auths"]

    make_image(ImageStore(store_dir()), "app:1")
    assert ukedge("push", "app:1", f"{host}/team/app:1", "-q").returncode == 0

    out = ukedge("logout", host)
    assert out.returncode == 0 and "Removed" in out.stderr
    denied = ukedge("push", "app:1", f"{host}/team/app:1", "-q")
    assert denied.returncode == 1
    assert f"ukedge login {host}" in denied.stderr
