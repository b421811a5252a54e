"""``ukedge images``, ``rmi``, ``image prune`` and ``pull`` as a user runs them: the entry point
in-process (argument parsing, error rendering, exit codes), and ``ukedge run`` in a subprocess
booting a real VM for the image-in-use case."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kit.cli import Run
from kit.host import ukedge_cmd
from kit.hub import RunningHub, hub, hub_factory
from kit.registry import make_image
from ukedge.build import build_image
from ukedge.image import ImageStore
from ukedge.paths import store_dir
from ukedge.registry import push

__all__ = ["hub", "hub_factory"]  # fixtures, re-exported for pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_images_lists_prune_removes_and_reports(ukedge: Callable[..., Run]) -> None:
    store = ImageStore(store_dir())
    kernel = os.urandom(50_000)
    a = make_image(store, "a:1", kernel=kernel, app=os.urandom(40_000))
    make_image(store, "b:1", kernel=kernel, app=os.urandom(40_000))

    table = ukedge("images")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == [
        "REPOSITORY",
        "TAG",
        "IMAGE",
        "ID",
        "PLATFORMS",
        "RUNTIME",
        "CREATED",
        "LAST",
        "USED",
        "SIZE",
    ]
    assert "never" in table.stdout.splitlines()[1]
    assert ukedge("images", "-q").stdout.split()[0] == a.removeprefix("sha256:")[:12]
    rows = json.loads(ukedge("images", "--json").stdout)
    assert [r["ref"] for r in rows] == ["a:1", "b:1"]
    assert set(rows[0]) >= {"id", "digest", "size", "runtime", "layers", "last_used", "in_use"}
    assert rows[0]["last_used"] is None and rows[0]["in_use"] is False
    assert rows[0]["platforms"] == ["linux/amd64"]

    inspected = json.loads(ukedge("image", "inspect", "a:1").stdout)
    assert list(inspected) == ["ref", "digest", "size", "manifest", "config"]

    pruned = ukedge("image", "prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["removed"] == ["a:1", "b:1"]
    assert report["reclaimed_bytes"] > 80_000 + 50_000  # two apps and the kernel, once
    assert store.images() == [] and store.disk_usage() == 0
    again = ukedge("image", "prune")
    assert again.stdout.strip() == "Total reclaimed space: 0 B"


def test_pull_applies_the_budget_from_the_environment(
    hub: RunningHub, tmp_path: Path, ukedge: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = ImageStore(tmp_path / "build")
    host = hub.url.removeprefix("http://")
    kernel = os.urandom(100_000)
    for name in ("a", "b"):
        make_image(source, f"{name}:1", kernel=kernel, app=os.urandom(60_000), name=name)
        push(source, f"{name}:1", f"{host}/team/{name}:1")

    monkeypatch.setenv("UKEDGE_IMAGE_BUDGET", "lots")
    bad = ukedge("pull", f"{host}/team/a:1")
    assert bad.returncode == 2
    assert "UKEDGE_IMAGE_BUDGET: invalid size 'lots'" in bad.stderr

    monkeypatch.setenv("UKEDGE_IMAGE_BUDGET", "200K")  # the kernel and one app
    first = ukedge("pull", f"{host}/team/a:1", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["ref"] == f"{host}/team/a:1"
    second = ukedge("pull", "-q", f"{host}/team/b:1")
    assert second.returncode == 0, second.stderr
    store = ImageStore(store_dir())
    assert second.stdout.strip() == store.resolve(f"{host}/team/b:1").digest
    assert [i.ref for i in store.images()] == [f"{host}/team/b:1"]  # a was evicted
    assert store.disk_usage() <= 200 * 1024


@pytest.mark.vm
def test_an_image_an_instance_uses_is_kept(
    ukedge: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImageStore(store_dir())
    build_image(EXAMPLES / "hello-c", ["hello-c:1"], store=store)
    # Unpacked layers of this test's own: removing the image deletes the unpacked copies of its
    # blobs, which must not be the shared cache other tests boot from.
    monkeypatch.setenv("UKEDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UKEDGE_ACCEL", "tcg")
    ran = subprocess.run(
        [*ukedge_cmd(), "run", "--name", "hello", "hello-c:1"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stderr

    refused = ukedge("rmi", "hello-c:1")
    assert refused.returncode == 1
    assert "image hello-c:1 is used by 1 instance (any state)" in refused.stderr
    assert "--force" in refused.stderr
    assert ukedge("image", "prune").stdout.strip() == "Total reclaimed space: 0 B"
    rows = json.loads(ukedge("images", "--json").stdout)
    assert [(r["ref"], r["in_use"]) for r in rows] == [("hello-c:1", True)]

    assert ukedge("rm", "hello").returncode == 0
    removed = ukedge("rmi", "hello-c:1")
    assert removed.returncode == 0, removed.stderr
    lines = removed.stdout.splitlines()
    assert lines[0] == "Untagged: hello-c:1"
    assert len(lines) == 1 + 5  # manifest, config, kernel, init and app layers
    assert store.images() == []
    assert not any((tmp_path / "cache" / "unpacked").iterdir())
