"""Pure-Python requirements, installed by the real pip from a local wheel directory (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.wheel import make_wheel
from ukedge.build._pip import install_requirements, read_requirements_file
from ukedge.errors import UkfileError


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "wheels"
    where.mkdir()
    make_wheel(where, "tinypkg", "py3-none-any", {"tinypkg/__init__.py": b"VALUE = 42\n"})
    make_wheel(
        where,
        "fastpkg",
        "cp311-cp311-manylinux_2_17_x86_64",
        {"fastpkg/_speed.cpython-311-x86_64-linux-gnu.so": b"\x7fELF"},
        purelib=False,
    )
    make_wheel(
        where,
        "sneaky",
        "py3-none-any",
        {"sneaky/__init__.py": b"", "sneaky/_c.cpython-311-x86_64-linux-gnu.so": b"\x7fELF"},
    )
    monkeypatch.setenv("PIP_FIND_LINKS", str(where))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    return where


def test_pure_package_is_installed_and_cached(wheels: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    target = install_requirements(["tinypkg==1.0"], cache, ukfile="U", field="python.requirements")
    assert (target / "tinypkg/__init__.py").read_text() == "VALUE = 42\n"
    assert not list(target.rglob("__pycache__")), "bytecode is compiled by the builder, not pip"
    (wheels / "tinypkg-1.0-py3-none-any.whl").unlink()
    again = install_requirements(["tinypkg==1.0"], cache, ukfile="U", field="python.requirements")
    assert again == target, "second install comes from the cache (the wheel is gone)"


def test_package_with_only_compiled_wheels_is_refused(wheels: Path, tmp_path: Path) -> None:
    with pytest.raises(UkfileError) as info:
        install_requirements(["fastpkg"], tmp_path / "c", ukfile="U", field="python.requirements")
    assert info.value.field == "python.requirements"
    assert "no pure-Python wheel of fastpkg" in info.value.problem
    assert not [p for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")]


def test_pure_tagged_wheel_with_extension_is_refused(wheels: Path, tmp_path: Path) -> None:
    with pytest.raises(UkfileError, match="sneaky ships a compiled extension"):
        install_requirements(["sneaky"], tmp_path / "c", ukfile="U", field="python.requirements")


def test_requirements_file(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# pinned\nidna==3.10  # idna\n\nattrs==24.2.0\n")
    assert read_requirements_file(req, ukfile="U", field="f") == ["idna==3.10", "attrs==24.2.0"]
    req.write_text("--index-url https://example.invalid/simple\nidna\n")
    with pytest.raises(UkfileError, match="line 1: pip options"):
        read_requirements_file(req, ukfile="U", field="f")
    with pytest.raises(UkfileError, match="does not exist"):
        read_requirements_file(tmp_path / "nope.txt", ukfile="U", field="f")
