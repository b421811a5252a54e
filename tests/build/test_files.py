"""Which files of a build directory go into the app layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.build import select_files
from ukedge.build._ukfile import FilesSection
from ukedge.errors import UkfileError


def _tree(root: Path, *paths: str) -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def _dests(context: Path, **section: object) -> list[str]:
    files = FilesSection.model_validate(section)
    return [f.dest for f in select_files(context, files, ukfile="Ukfile")]


def test_default_takes_everything_but_ukfile_and_junk(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        "Ukfile",
        "main.py",
        "pkg/mod.py",
        "pkg/__pycache__/mod.cpython-311.pyc",
        ".git/HEAD",
        "notes.txt~",
        "data/x.json",
    )
    assert _dests(tmp_path) == ["/app/data/x.json", "/app/main.py", "/app/pkg/mod.py"]


def test_include_and_exclude_patterns(tmp_path: Path) -> None:
    _tree(tmp_path, "main.py", "README.md", "pkg/a.py", "pkg/b.txt", "tests/test_a.py")
    assert _dests(tmp_path, include=["*.py"], exclude=["tests"]) == [
        "/app/main.py",
        "/app/pkg/a.py",
    ]
    assert _dests(tmp_path, include=["pkg/*"]) == ["/app/pkg/a.py", "/app/pkg/b.txt"]
    assert _dests(tmp_path, include=["pkg"]) == ["/app/pkg/a.py", "/app/pkg/b.txt"]
    assert _dests(tmp_path, include=["**/*.txt"]) == ["/app/pkg/b.txt"]
    assert _dests(tmp_path, exclude=["*.md", "pkg/*.txt", "tests/**"]) == [
        "/app/main.py",
        "/app/pkg/a.py",
    ]


def test_dest_and_copy(tmp_path: Path) -> None:
    _tree(tmp_path, "main.py", "conf/prod.json", "assets/a.css", "assets/img/b.png")
    dests = _dests(
        tmp_path,
        include=["main.py"],
        dest="/srv",
        copy={"conf/prod.json": "/etc/app.json", "assets": "/srv/static"},
    )
    assert dests == [
        "/etc/app.json",
        "/srv/main.py",
        "/srv/static/a.css",
        "/srv/static/img/b.png",
    ]


def test_symlinks_are_kept_as_links(tmp_path: Path) -> None:
    _tree(tmp_path, "real.txt")
    (tmp_path / "link.txt").symlink_to("real.txt")
    selected = select_files(tmp_path, FilesSection(), ukfile="Ukfile")
    link = next(f for f in selected if f.dest == "/app/link.txt")
    assert link.source.is_symlink()


def test_include_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    _tree(tmp_path, "main.py")
    with pytest.raises(UkfileError) as info:
        _dests(tmp_path, include=["main.py", "*.js"])
    assert info.value.field == "files.include[1]"
    assert "'*.js' matches no file" in info.value.problem


def test_copy_of_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UkfileError) as info:
        _dests(tmp_path, copy={"nope.json": "/etc/nope.json"})
    assert info.value.field == "files.copy.'nope.json'"
    assert "does not exist" in info.value.problem
