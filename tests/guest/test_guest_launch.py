from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import Any

import pytest

from kit.cpio import cpio_members
from ukedge.build.guest import add_platform, ensure_init
from ukedge.errors import UsageError
from ukedge.guest import (
    LAUNCH_MAGIC,
    LAUNCH_PATH,
    SEED_PATH,
    CpioArchive,
    launch_archive,
    launch_records,
    parse_launch,
    seed_archive,
)


def _launch(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "argv": ["/app/demo", "--flag", "default"],
        "env": {"A": "1", "B": "x=y"},
        "workdir": "/app",
        "hostname": "demo",
    }
    return {**base, **kw}


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
    members = cpio_members(data)
    assert set(members) == {"ukedge", LAUNCH_PATH.lstrip("/")}
    mode, body, _, _ = members[LAUNCH_PATH.lstrip("/")]
    assert stat.S_ISREG(mode)
    assert body == launch_records(**_launch(env={"X": "1"}))
    assert launch_archive(**_launch(env={"X": "1"})) == data  # reproducible


def test_seed_archive_holds_only_the_seed_readable_by_its_owner() -> None:
    seed = bytes(range(32))
    members = cpio_members(launch_archive(**_launch()) + seed_archive(seed))
    mode, body, _, _ = members[SEED_PATH.lstrip("/")]
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o400
    assert body == seed
    assert set(members) == {"ukedge", LAUNCH_PATH.lstrip("/"), SEED_PATH.lstrip("/")}


@pytest.mark.parametrize("size", [0, 257])
def test_seed_archive_refuses_what_init_cannot_take(size: int) -> None:
    with pytest.raises(UsageError, match="1 to 256 bytes"):
        seed_archive(bytes(size))


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
    members = cpio_members(buf.getvalue())
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
