"""The guest init (C) and :mod:`ukedge.guest` (Python) read and write the contract alike.

``init.c`` built with ``-DUKEDGE_INIT_SELFTEST`` runs its own parsers and writers on the host:
the exit lines it prints must read back as their status, the command lines and launch files the
host writes must parse in C to what the host meant, and the names both sides use must be equal.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ukedge import guest
from ukedge.build.guest import compiler, init_source
from ukedge.guest import format_exit_line, guest_cmdline, launch_records, parse_exit_line


@pytest.fixture(scope="module")
def selftest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init-selftest")
    (root / "init.c").write_bytes(init_source())
    binary = root / "init-selftest"
    flags = ["-static", "-DUKEDGE_INIT_SELFTEST", "-Wall", "-Wextra", "-Werror"]
    subprocess.run(
        [compiler(), *flags, "-Wno-unused-function", "-o", str(binary), str(root / "init.c")],
        check=True,
        capture_output=True,
    )
    return binary


def _run(binary: Path, *args: str) -> bytes:
    return subprocess.run([str(binary), *args], check=True, capture_output=True).stdout


def test_names_are_the_same(selftest: Path) -> None:
    lines = _run(selftest, "constants").decode().splitlines()
    c_names = dict(line.split("=", 1) for line in lines)
    assert c_names == {name: str(getattr(guest, name)) for name in c_names}
    assert set(c_names) == {
        "LAUNCH_PATH",
        "LAUNCH_MAGIC",
        "SEED_PATH",
        "RESULTS_PORT",
        "CONTROL_PORT",
        "RESULTS_DEVICE",
        "EXIT_PREFIX",
        "RESUME_SIGNAL",
        "HELD_LINE",
        "UNPACK_FAILED_STATUS",
        "RUNTIME_MOUNT",
    }


def test_every_exit_line_init_prints_reads_back(selftest: Path) -> None:
    statuses = list(range(256))
    printed = _run(selftest, "exit", *map(str, statuses)).decode()
    lines = printed.splitlines(keepends=True)
    assert lines == [format_exit_line(s) for s in statuses]
    for status, line in zip(statuses, lines, strict=True):
        assert parse_exit_line("app output without newline" + line) == status
        assert parse_exit_line(line + "[    1.0] reboot: Restarting system\n") == status


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"ip": "10.0.2.15/24", "gateway": "10.0.2.2", "dns": "10.0.2.3", "clock": 1.25},
            {"ip": "10.0.2.15/24", "gw": "10.0.2.2", "dns": "10.0.2.3", "time": "1.250"},
        ),
        ({"ip": "192.168.7.9", "clock": 1700000000.0}, {"ip": "192.168.7.9/24"}),
        ({"clock": 5.0, "tsc_khz": 2_000_000}, {"time": "5.000"}),
        ({"clock": 5.0, "hold": True}, {"hold": "1"}),
        ({"clock": 5.0, "ro_mounts": ("/lib", "/usr/bin")}, {"ro": "/lib,/usr/bin"}),
    ],
)
def test_command_line_parses_in_init_as_meant(
    selftest: Path, tmp_path: Path, kwargs: dict[str, object], expected: dict[str, str]
) -> None:
    args: dict[str, object] = {"ip": None, "gateway": None, "dns": None}
    args.update(kwargs)
    line = guest_cmdline("console=ttyS0 quiet ukedge.debug", **args)  # type: ignore[arg-type]
    (tmp_path / "cmdline").write_text(line + "\n")  # /proc/cmdline ends in a newline
    parsed = dict(
        record.split("=", 1)
        for record in _run(selftest, "cmdline", str(tmp_path / "cmdline")).decode().splitlines()
    )
    assert parsed == {"time": f"{kwargs['clock']:.3f}", "debug": "1", **expected}


def test_launch_file_parses_in_init_as_meant(selftest: Path, tmp_path: Path) -> None:
    argv = ["/app/demo", "", "two words", "new\nline", "ü=é"]
    env = {"A": "1", "B": "x=y", "C": "new\nline", "PATH": "/app/bin"}
    records = launch_records(argv=argv, env=env, workdir="/app", hostname="h-1")
    (tmp_path / "launch").write_bytes(records)
    out = _run(selftest, "launch", str(tmp_path / "launch"))
    assert out.endswith(b"\0")
    parsed = [r.decode() for r in out[:-1].split(b"\0")]
    assert parsed == [
        *(f"arg={a}" for a in argv),
        *(f"env={k}={v}" for k, v in env.items()),
        "env=HOME=/",  # init adds HOME (and PATH) when the launch has none
        "workdir=/app",
        "hostname=h-1",
    ]


def test_init_refuses_a_launch_file_without_the_magic(selftest: Path, tmp_path: Path) -> None:
    (tmp_path / "launch").write_bytes(b"arg=/bin/x\0")
    proc = subprocess.run(
        [str(selftest), "launch", str(tmp_path / "launch")], capture_output=True, check=False
    )
    assert proc.returncode == 1
    assert b"does not start with ukedge-launch=1" in proc.stderr
