"""``paths.write_private``: the one writer of keys, tokens and credentials."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ukedge import paths


def test_a_new_file_is_0600_and_holds_the_data(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    paths.write_private(target, "secret\n")
    assert target.read_text() == "secret\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_replacing_keeps_0600_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "token"
    target.write_text("old")
    target.chmod(0o644)
    (tmp_path / ".token.99999.tmp").write_text("left by a writer that crashed")
    paths.write_private(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]


def test_a_failure_before_the_rename_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "credential.json"
    paths.write_private(target, "old")

    def fail() -> None:
        raise RuntimeError("crash here")

    with pytest.raises(RuntimeError):
        paths.write_private(target, "new", before_rename=fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["credential.json"]
