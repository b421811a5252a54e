"""The arm64 python runtime's package versions, asked of this machine's apt (multiarch lists)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ukedge.build import _python_debs
from ukedge.build._python_debs import PYTHON_PACKAGES, _apt_versions
from ukedge.errors import BuildError


def _arm64_lists() -> bool:
    probe = subprocess.run(
        ["apt-cache", "show", "python3.11-minimal:arm64"], capture_output=True, check=False
    )
    return probe.returncode == 0


def test_versions_are_asked_once_until_apts_lists_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _arm64_lists():
        pytest.skip("needs Debian's arm64 lists: dpkg --add-architecture arm64 && apt-get update")
    pins = _apt_versions("arm64", tmp_path)
    assert [pin.split("=", 1)[0] for pin in pins] == [f"{p}:arm64" for p in PYTHON_PACKAGES]
    assert all(pin.split("=", 1)[1] for pin in pins)

    def no_apt(*args: object, **kwargs: object) -> None:
        raise AssertionError("apt-cache was asked again with unchanged lists")

    monkeypatch.setattr(_python_debs.subprocess, "run", no_apt)
    assert _apt_versions("arm64", tmp_path) == pins
    # Other lists (an apt-get update): asked again.
    monkeypatch.setattr(_python_debs, "_lists_key", lambda: "other lists")
    with pytest.raises(AssertionError, match="asked again"):
        _apt_versions("arm64", tmp_path)


def test_an_architecture_apt_does_not_know_says_how_to_enable_it(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="dpkg --add-architecture s390x"):
        _apt_versions("s390x", tmp_path)
