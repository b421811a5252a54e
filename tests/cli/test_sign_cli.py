"""``ukedge key generate``, ``ukedge sign`` and ``ukedge verify`` as a user runs them, through
the ``ukedge`` entry point, against a hub over HTTP."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kit.cli import Run
from kit.hub import RunningHub, run_hub
from kit.registry import make_image
from ukedge.image import ImageStore
from ukedge.registry import push


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    with run_hub(tmp_path / "hub", auth="off") as running:
        yield running


def test_generate_sign_verify(
    ukedge: Callable[..., Run],
    hub: RunningHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UKEDGE_KEY_PASSWORD", "pw")
    made = ukedge("key", "generate", "--output-key-prefix", str(tmp_path / "ci"), "--json")
    assert made.returncode == 0, made.stderr
    paths = json.loads(made.stdout)
    assert stat.S_IMODE(Path(paths["private_key"]).stat().st_mode) == 0o600
    again = ukedge("key", "generate", "--output-key-prefix", str(tmp_path / "ci"))
    assert again.returncode == 2 and "exists" in again.stderr
    ukedge("key", "generate", "--output-key-prefix", str(tmp_path / "other"))

    store = ImageStore(tmp_path / "src")
    make_image(store, "app:1")
    ref = f"{hub.host}/team/app:1"
    digest = push(store, "app:1", ref)

    unsigned = ukedge("verify", ref, "--key", str(tmp_path / "ci.pub"))
    assert unsigned.returncode == 1
    assert "NOT verified" in unsigned.stdout and "unsigned" in unsigned.stderr

    signed = ukedge("sign", ref, "--key", str(tmp_path / "ci.key"), "--json")
    assert signed.returncode == 0, signed.stderr
    [entry] = json.loads(signed.stdout)
    assert entry["digest"] == digest and entry["added"]
    assert entry["tag"] == f"sha256-{digest.removeprefix('sha256:')}.sig"

    ok = ukedge("verify", ref, "--key", str(tmp_path / "ci.pub"), "--json")
    assert ok.returncode == 0, ok.stderr
    [verdict] = json.loads(ok.stdout)
    assert verdict["verified"] and verdict["digest"] == digest
    assert verdict["signers"] == [paths["key_id"]]

    other = ukedge("verify", f"{hub.host}/team/app@{digest}", "--key", str(tmp_path / "other.pub"))
    assert other.returncode == 1 and "none valid for a trusted key" in other.stderr
    either = ukedge(
        "verify", ref, "--key", str(tmp_path / "other.pub"), "--key", str(tmp_path / "ci.pub")
    )
    assert either.returncode == 0 and "Verified" in either.stdout


def test_wrong_password_and_missing_key_are_usage_errors(
    ukedge: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: RunningHub
) -> None:
    monkeypatch.setenv("UKEDGE_KEY_PASSWORD", "right")
    ukedge("key", "generate", "--output-key-prefix", str(tmp_path / "k"))
    monkeypatch.setenv("UKEDGE_KEY_PASSWORD", "wrong")
    bad = ukedge("sign", f"{hub.host}/team/app:1", "--key", str(tmp_path / "k.key"))
    assert bad.returncode == 2 and "wrong password" in bad.stderr
    missing = ukedge("verify", f"{hub.host}/team/app:1", "--key", str(tmp_path / "nope.pub"))
    assert missing.returncode == 2 and "cannot read the public key" in missing.stderr
    monkeypatch.delenv("UKEDGE_KEY_PASSWORD")
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    no_tty = ukedge("key", "generate", "--output-key-prefix", str(tmp_path / "z"))
    assert no_tty.returncode == 2 and "UKEDGE_KEY_PASSWORD" in no_tty.stderr
    assert not (tmp_path / "z.key").exists()
