from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import Any

import pytest

from ukedge.build.guest import add_platform, ensure_init
from ukedge.errors import UsageError
from ukedge.guest import (
    LAUNCH_MAGIC,
    LAUNCH_PATH,
    CpioArchive,
    launch_archive,
    launch_records,
    parse_launch,
)


def _launch(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "argv": ["/app/demo", "--flag", "default"],
        "env": {"A": "1", "B": "x=y"},
        "workdir": "/app",
        "hostname": "demo",
    }
    return {**base, **kw}


def _members(data: bytes) -> dict[str, tuple[int, bytes, int, int]]:
    """Parse a newc archive: path -> (mode, data, rdevmajor, rdevminor)."""
    out: dict[str, tuple[int, bytes, int, int]] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (fields[1], data[body : body + filesize], fields[9], fields[10])
        pos = body + filesize + (-filesize % 4)


def test_records_round_trip() -> None:
    data = launch_records(**_launch(env={"B": "over", "C": "new line\nok"}, hostname="h1"))
    assert data.startswith(LAUNCH_MAGIC.encode() + b"\0")
    parsed = parse_launch(data)
    assert parsed["arg"] == ["/app/demo", "--flag", "default"]
    assert parsed["env"] == ["B=over", "C=new line\nok"]
    assert parsed["workdir"] == ["/app"]
    assert parsed["hostname"] == ["h1"]


def test_empty_arguments_survive() -> None:
    assert parse_launch(launch_records(**_launch(argv=["x", ""])))["arg"] == ["x", ""]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"env": {"A=B": "1"}}, "environment variable name"),
        ({"env": {"": "1"}}, "environment variable name"),
        ({"env": {"A": "a\0b"}}, "NUL"),
        ({"argv": ["a\0b"]}, "NUL"),
        ({"hostname": "has space"}, "hostname"),
        ({"hostname": "new\nline"}, "hostname"),
        ({"hostname": "x" * 65}, "hostname"),
        ({"hostname": ""}, "hostname"),
        ({"workdir": "app"}, "workdir"),
    ],
)
def test_bad_launch_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        launch_records(**_launch(**kwargs))


def test_launch_archive_holds_only_the_launch_file() -> None:
    data = launch_archive(**_launch(env={"X": "1"}))
    members = _members(data)
    assert set(members) == {"ukedge", LAUNCH_PATH.lstrip("/")}
    mode, body, _, _ = members[LAUNCH_PATH.lstrip("/")]
    assert stat.S_ISREG(mode)
    assert body == launch_records(**_launch(env={"X": "1"}))
    assert launch_archive(**_launch(env={"X": "1"})) == data  # reproducible


def test_parse_launch_rejects_foreign_data() -> None:
    with pytest.raises(UsageError):
        parse_launch(b"hello\0")
    with pytest.raises(UsageError):
        parse_launch(LAUNCH_MAGIC.encode())


def test_add_platform_puts_init_and_skeleton() -> None:
    archive = CpioArchive()
    add_platform(archive)
    buf = io.BytesIO()
    archive.write(buf)
    members = _members(buf.getvalue())
    mode, body, _, _ = members["init"]
    assert stat.S_ISREG(mode) and mode & 0o111
    assert body == ensure_init().read_bytes()
    for name in ("dev", "proc", "sys", "tmp", "run", "etc"):
        assert stat.S_ISDIR(members[name][0]), name
    console_mode, _, major, minor = members["dev/console"]
    assert stat.S_ISCHR(console_mode) and (major, minor) == (5, 1)


def test_init_is_static_and_small() -> None:
    binary = ensure_init()
    head = binary.read_bytes()[:64]
    assert head[:4] == b"\x7fELF"
    assert ensure_init() == binary  # cached
    text = Path(binary).read_bytes()
    assert b"/lib64/ld-linux" not in text and b"ld-musl" not in text  # no interpreter
    assert binary.stat().st_size < 1_000_000
