"""``ukedge ps`` answers this machine without typer, rich or pydantic (issue 9.8), and says
exactly what the command says through the instance manager: the same bytes for the table,
``-q`` and ``--json``, and the same reconciliation of records whose machine ended unwatched."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from kit.cli import Run
from kit.host import ukedge_cmd
from kit.net import free_port
from ukedge.cli import _console
from ukedge.cli._ps import PsFlags, parse_flags, status

#: Run ``ukedge`` through its entry point, then report on stderr's last line whether the
#: command went past the local path (it loaded the parser or the models).
_PROBE = """
import sys
sys.argv = ["ukedge", *sys.argv[1:]]
from ukedge.cli.main import main
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted(m for m in ("typer", "rich", "pydantic") if m in sys.modules)
sys.stderr.write("\\nloaded: " + ",".join(heavy) + "\\n")
"""


def _local(*args: str) -> tuple[str, str]:
    """``ukedge ps ARGS`` in a fresh interpreter: its stdout, and the heavy modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "ps", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr.strip().splitlines()[-1].removeprefix("loaded:").strip()


def _through_manager(ukedge: Callable[..., Run], *args: str) -> str:
    """The command as typer runs it (a root option first keeps it off the local path)."""
    result = ukedge("--verbose", "ps", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_parse_flags_takes_ps_own_flags_only() -> None:
    assert parse_flags([]) == PsFlags()
    assert parse_flags(["-aq"]) == PsFlags(all_instances=True, quiet=True)
    assert parse_flags(["--all", "--json", "-q"]) == PsFlags(True, True, True)
    for other in (["--help"], ["-h"], ["-x"], ["--no-trunc"], ["--"], ["-"], ["name"], ["-aj"]):
        assert parse_flags(other) is None, other


@pytest.mark.parametrize(
    ("record", "shown"),
    [
        ({"state": "running", "health": "none"}, "Up -"),
        ({"state": "running", "health": "unchecked"}, "Up - (health unchecked)"),
        ({"state": "running", "health": "unhealthy"}, "Up - (unhealthy)"),
        ({"state": "created", "on_demand": True}, "Idle (on demand)"),
        ({"state": "exited", "on_demand": True, "exit_code": 0}, "Idle (on demand) -"),
        ({"state": "exited", "on_demand": True, "exit_code": 2}, "Exited (2) - ago"),
        ({"state": "exited", "exit_code": 3}, "Exited (3) - ago"),
        ({"state": "failed"}, "Failed - ago"),
        ({"state": "stopping"}, "Stopping"),
        ({"state": "created"}, "Created"),
    ],
)
def test_status_column(record: dict[str, object], shown: str) -> None:
    base = {"on_demand": False, "exit_code": None, "health": "none"}
    assert status({**base, "started_at": None, "finished_at": None, **record}) == shown


def _rich_table(columns: list[str], rows: list[list[str]], header: bool, tty: bool) -> str:
    """What print_table's rich table writes, to a pipe or to a terminal of 120 columns."""
    buf = io.StringIO()
    console = Console(
        file=buf,
        highlight=False,
        soft_wrap=True,
        width=120 if tty else 320,
        force_terminal=tty,
        color_system="standard" if tty else None,
    )
    table = Table(
        box=None, pad_edge=False, show_edge=False, header_style="bold", show_header=header
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return buf.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
@pytest.mark.parametrize(
    ("columns", "rows", "header"),
    [
        (["INSTANCE ID", "NAME", "PORTS"], [], True),
        (
            ["INSTANCE ID", "NAME", "PORTS"],
            [["3f2a", "a-long-name", ""], ["77aa0c19d2b1", "n", "127.0.0.1:80->8080/tcp"]],
            True,
        ),
        (["key", "value"], [["memory", "64 MiB"], ["accelerator", "tcg"]], False),
    ],
)
def test_plain_table_is_what_rich_writes(
    columns: list[str],
    rows: list[list[str]],
    header: bool,
    tty: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (*_console._STYLE_ENV, "TERM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setattr(sys, "stdout", _Terminal() if tty else io.StringIO())
    assert _console._plain_table(columns, rows, header) == _rich_table(columns, rows, header, tty)


def test_plain_table_leaves_to_rich_what_it_would_fold_or_measure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    for name in _console._STYLE_ENV:
        monkeypatch.delenv(name, raising=False)
    assert _console._plain_table(["A"], [["x" * 400]], True) is None  # wider than a pipe's 320
    assert _console._plain_table(["A"], [["ünïcode"]], True) is None
    assert _console._plain_table(["A"], [["[bold]markup"]], True) is None
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert _console._plain_table(["A"], [["x"]], True) is None


def test_plain_json_is_what_rich_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    data = [{"name": "é", "ports": [{"host_port": 80}], "exit_code": None, "t": 1.5e9}, {}]
    for name in _console._STYLE_ENV:
        monkeypatch.delenv(name, raising=False)
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stdout", plain)
    _console.print_json(data)
    rich = io.StringIO()
    Console(file=rich, highlight=False, soft_wrap=True, width=320).print_json(
        json.dumps(data), indent=2
    )
    assert plain.getvalue() == rich.getvalue()


_FLAGS = [(), ("-a",), ("-q",), ("-aq",), ("--json",), ("-a", "--json")]


def _same_output(ukedge: Callable[..., Run]) -> None:
    """Each listing is byte for byte the same on both paths, and the local one loaded none of
    the heavy modules. "Up 3 seconds" ticks, so a pair counts when the local path printed the
    same before and after the manager's (both sides of it, at the same second)."""
    for args in _FLAGS:
        for _ in range(20):
            before, heavy = _local(*args)
            managed = _through_manager(ukedge, *args)
            after, _ = _local(*args)
            if before == after:
                break
        assert heavy == "", f"ps {' '.join(args)} left the local path: loaded {heavy}"
        assert before == after, "the listing changed on every try"
        assert managed == before, f"ps {' '.join(args)}"


@pytest.mark.kernel
@pytest.mark.vm
def test_local_ps_prints_what_the_command_prints(
    cli_home: Path, ukedge: Callable[..., Run]
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ukedge_cmd(), *args], capture_output=True, text=True, timeout=300, env=os.environ
        )

    _same_output(ukedge)  # an empty node
    port = free_port()
    running = cli("run", "-d", "--name", "agg", "-p", f"{port}:8080", "sensor-agg:1")
    assert running.returncode == 0, running.stderr
    exited = cli("run", "--name", "said-three", "-e", "HELLO_EXIT=3", "hello-c:1")
    assert exited.returncode == 3, exited.stderr
    table, _ = _local("-a")
    assert "Exited (3)" in table and "(health unchecked)" in table
    assert f"127.0.0.1:{port}->8080/tcp" in table
    _same_output(ukedge)

    # A machine that dies while nobody watches: the record says running until someone looks.
    # The local path sees that it needs reconciling and hands over to the manager, which
    # records the end; from then on the local path answers again, with the same verdict.
    pid = json.loads(_local("--json")[0])[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # gone or a zombie of the `run -d` that spawned it (reaped, ended)
    listed, heavy = _local("-a", "--json")
    assert "pydantic" in heavy, "a record to reconcile went through the manager"
    assert {i["name"]: i["state"] for i in json.loads(listed)} == {
        "agg": "failed",
        "said-three": "exited",
    }
    again, heavy = _local("-a", "--json")
    assert heavy == "" and again == listed
    _same_output(ukedge)
