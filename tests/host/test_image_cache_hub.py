"""Pulls into the node's image cache from a real hub over HTTP: shared layers fetched once, the
budget applied after each pull, a failed pull leaving the cache as it was.

A corrupt blob from a registry is refused by the pull itself and nothing is tagged; that is
tested once, in tests/registry/test_client_faults.py
(test_corrupted_blob_is_refused_and_nothing_is_stored); here only what the cache adds: a failed
pull records nothing and evicts nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from kit.hub import RunningHub, hub, hub_factory
from kit.registry import Recorder, make_image
from ukedge.errors import DigestMismatchError
from ukedge.host import ImageCache, UnpackedLayers
from ukedge.image import ImageStore
from ukedge.registry import push

__all__ = ["hub", "hub_factory"]  # fixtures, re-exported for pytest

KERNEL = os.urandom(300_000)
RUNTIME = os.urandom(100_000)


class Users:
    def __init__(self) -> None:
        self.digests: list[str] = []

    def __call__(self) -> Iterable[str]:
        return list(self.digests)


def _publish(hub: RunningHub, tmp_path: Path, *names: str) -> dict[str, str]:
    """Images sharing kernel and runtime layers, each with its own 20 kB app, pushed to the hub;
    returns their remote references by name."""
    source = ImageStore(tmp_path / "build")
    host = hub.url.removeprefix("http://")
    refs = {}
    for name in names:
        make_image(
            source, f"{name}:1", kernel=KERNEL, runtime=RUNTIME, app=os.urandom(20_000), name=name
        )
        refs[name] = f"{host}/team/{name}:1"
        push(source, f"{name}:1", refs[name])
    return refs


@pytest.fixture
def node(tmp_path: Path) -> Callable[..., tuple[ImageCache, Users]]:
    def make(budget: int | None = None) -> tuple[ImageCache, Users]:
        users = Users()
        cache = ImageCache(
            ImageStore(tmp_path / "node" / "store"),
            UnpackedLayers(tmp_path / "node" / "unpacked"),
            budget,
            users,
        )
        return cache, users

    return make


def _outcomes(recorder: Recorder) -> dict[str, str]:
    return {recorder.labels[d]: o for d, o in recorder.outcomes.items()}


def test_second_image_fetches_only_what_it_does_not_share(
    hub: RunningHub, tmp_path: Path, node: Callable[..., tuple[ImageCache, Users]]
) -> None:
    refs = _publish(hub, tmp_path, "a", "b")
    cache, _ = node()
    first = Recorder()
    summary = cache.pull(refs["a"], progress=first)
    assert summary.ref == refs["a"] and summary.repository.endswith("team/a")
    assert set(first.outcomes.values()) == {"downloaded"}
    assert len(first.outcomes) == 4  # config, kernel, runtime, app

    second = Recorder()
    cache.pull(refs["b"], progress=second)
    _, manifest = cache.store.manifest(refs["b"])
    kernel, runtime, app = (layer.digest for layer in manifest.layers)
    assert second.outcomes[kernel] == "cached"
    assert second.outcomes[runtime] == "cached"
    assert second.outcomes[app] == "downloaded"
    assert second.outcomes[manifest.config.digest] == "downloaded"  # its own name and config
    rows = {row.ref: row for row in cache.images()}
    assert sorted(rows) == sorted(refs.values())
    assert all(row.last_used is None and not row.in_use for row in rows.values())


def test_budget_evicts_the_least_recently_used_image_no_instance_uses(
    hub: RunningHub,
    tmp_path: Path,
    node: Callable[..., tuple[ImageCache, Users]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    refs = _publish(hub, tmp_path, "a", "b", "c")
    cache, users = node()
    cache.pull(refs["a"])
    cache.pull(refs["b"])
    two_images = cache.usage_bytes()
    # room for the shared layers and two apps, not three
    cache.budget = two_images + 10_000
    a = cache.store.resolve(refs["a"]).digest
    time.sleep(0.01)
    cache.touch(a)  # an instance started from a: b is now the least recently used

    with caplog.at_level(logging.INFO, logger="ukedge.host.images._cache"):
        cache.pull(refs["c"])
    assert [row.ref for row in cache.images()] == [refs["a"], refs["c"]]
    assert cache.usage_bytes() <= cache.budget
    assert any(f"evicted {refs['b']}" in r.getMessage() for r in caplog.records)

    # a is in use now (an exited instance counts); the budget fits less than one image
    users.digests = [a]
    cache.budget = 1000
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ukedge.host.images._cache"):
        pulled = cache.pull(refs["b"])
    # b was just pulled and a is in use: both stay, over budget, with a warning
    assert [row.ref for row in cache.images()] == [refs["a"], refs["b"]]
    assert pulled.ref == refs["b"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings and "over its budget" in warnings[0]

    # the order survives a restart of the node: a new cache over the same store
    cache.close()
    again, _ = node(budget=None)
    rows = {row.ref: row for row in again.images()}
    assert rows[refs["a"]].last_used is not None
    assert rows[refs["b"]].last_used is None


def test_a_failed_pull_records_nothing_and_evicts_nothing(
    hub: RunningHub, tmp_path: Path, node: Callable[..., tuple[ImageCache, Users]]
) -> None:
    refs = _publish(hub, tmp_path, "a", "b")
    cache, _ = node()
    cache.pull(refs["a"])
    cache.budget = 1000  # any pull that completed would evict a
    _, manifest = ImageStore(tmp_path / "build").manifest("b:1")
    app = manifest.layers[-1].digest
    corrupt = [
        p
        for p in hub.settings.data_dir.rglob("*")
        if p.is_file() and p.stat().st_size == 20_000 and _hashes_to(p, app)
    ]
    assert len(corrupt) == 1, "the hub keeps each blob once, as a file"
    corrupt[0].write_bytes(os.urandom(20_000))

    with pytest.raises(DigestMismatchError):
        cache.pull(refs["b"])
    assert [row.ref for row in cache.images()] == [refs["a"]]
    assert cache.usage.all().keys() == {cache.store.resolve(refs["a"]).digest}


def _hashes_to(path: Path, digest: str) -> bool:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == digest
