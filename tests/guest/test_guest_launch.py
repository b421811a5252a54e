from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from ukedge.build._cpio import CpioArchive
from ukedge.build.guest import (
    LAUNCH_MAGIC,
    LAUNCH_PATH,
    add_platform,
    ensure_init,
    launch_archive,
    launch_records,
    parse_launch,
)
from ukedge.errors import UsageError
from ukedge.image import ImageConfig, KernelInfo


def _config(**kw: object) -> ImageConfig:
    base: dict[str, object] = {
        "name": "demo",
        "runtime": "static",
        "entrypoint": ["/app/demo", "--flag"],
        "args": ["default"],
        "env": {"A": "1", "B": "x=y"},
        "workdir": "/app",
        "kernel": KernelInfo(profile="minimal", version="6.1.0"),
    }
    base.update(kw)
    return ImageConfig.model_validate(base)


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
    data = launch_records(_config(), env={"B": "over", "C": "new line\nok"}, hostname="h1")
    assert data.startswith(LAUNCH_MAGIC.encode() + b"\0")
    parsed = parse_launch(data)
    assert parsed["arg"] == ["/app/demo", "--flag", "default"]
    assert parsed["env"] == ["A=1", "B=over", "C=new line\nok"]
    assert parsed["workdir"] == ["/app"]
    assert parsed["hostname"] == ["h1"]


def test_args_override_config_args_and_hostname_defaults_to_name() -> None:
    parsed = parse_launch(launch_records(_config(), args=["x", ""]))
    assert parsed["arg"] == ["/app/demo", "--flag", "x", ""]
    assert parsed["hostname"] == ["demo"]


def test_empty_args_override_too() -> None:
    assert parse_launch(launch_records(_config(), args=[]))["arg"] == ["/app/demo", "--flag"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"env": {"A=B": "1"}}, "environment variable name"),
        ({"env": {"": "1"}}, "environment variable name"),
        ({"env": {"A": "a\0b"}}, "NUL"),
        ({"args": ["a\0b"]}, "NUL"),
        ({"hostname": "has space"}, "hostname"),
        ({"hostname": "x" * 65}, "hostname"),
    ],
)
def test_bad_launch_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        launch_records(_config(), **kwargs)  # type: ignore[arg-type]


def test_relative_workdir_rejected() -> None:
    with pytest.raises(UsageError, match="workdir"):
        launch_records(_config(workdir="app"))


def test_launch_archive_holds_only_the_launch_file() -> None:
    data = launch_archive(_config(), env={"X": "1"})
    members = _members(data)
    assert set(members) == {"ukedge", LAUNCH_PATH.lstrip("/")}
    mode, body, _, _ = members[LAUNCH_PATH.lstrip("/")]
    assert stat.S_ISREG(mode)
    assert body == launch_records(_config(), env={"X": "1"})
    assert launch_archive(_config(), env={"X": "1"}) == data  # reproducible


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
