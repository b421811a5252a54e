from __future__ import annotations

import pytest

from ukedge.errors import UsageError
from ukedge.image import Reference, parse_reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", Reference("hello", "latest")),
        ("hello:1", Reference("hello", "1")),
        ("team/app:v2", Reference("team/app", "v2")),
        ("localhost:5000/app", Reference("app", "latest", None, "localhost:5000")),
        ("127.0.0.1:5000/a/b:c", Reference("a/b", "c", None, "127.0.0.1:5000")),
        (
            "hub.example.org/x@sha256:" + "a" * 64,
            Reference("x", None, "sha256:" + "a" * 64, "hub.example.org"),
        ),
    ],
)
def test_parse(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_round_trip_and_parts() -> None:
    ref = parse_reference("localhost:5000/team/app:1")
    assert str(ref) == "localhost:5000/team/app:1"
    assert ref.name == "localhost:5000/team/app"
    assert ref.reference == "1"
    assert str(parse_reference("app", default_tag=False)) == "app"


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("", "empty"),
        ("Upper/case", "repository"),
        ("app:bad tag", "tag"),
        ("app:" + "x" * 200, "tag"),
        ("app@sha256:zz", "digest"),
        ("-app", "repository"),
        ("app//x", "repository"),
    ],
)
def test_invalid_names_the_part(text: str, part: str) -> None:
    with pytest.raises(UsageError, match=part):
        parse_reference(text)
