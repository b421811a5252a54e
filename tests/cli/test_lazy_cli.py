"""The CLI loads only what a command uses (issue 9.8): each case runs ``ukedge`` in a fresh
interpreter and looks at which modules it imported, so a module-level import that drags a
server, the builder or a transfer stack into every command fails here, whatever the timing."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from ukedge.cli import _app

#: Print the modules a CLI invocation loaded, as JSON on the last line of stderr.
_PROBE = """
import json, sys
sys.argv = ["ukedge", *{args!r}]
from ukedge.cli.main import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("\\n" + json.dumps(sorted(sys.modules)) + "\\n")
"""

#: Never needed to list instances or print help: servers, the builder, kernel builds, transfers.
SERVER_AND_BUILD = (
    "fastapi",
    "uvicorn",
    "starlette",
    "prometheus_client",
    "paho",
    "ukedge.hub",
    "ukedge.kernel",
    "ukedge.build._builder",
    "ukedge.host.agent._api",
    "ukedge.host.agent._serve",
    "ukedge.host.agent._agent",
    "ukedge.host.results._spool",
)


def _loaded(args: list[str], home: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=args)],
        capture_output=True,
        text=True,
        env={"UKEDGE_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
        timeout=120,
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def _present(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in loaded or any(m.startswith(n + ".") for m in loaded))


def test_version_loads_neither_the_parser_nor_rich(tmp_path: Path) -> None:
    loaded = _loaded(["--version"], tmp_path)
    assert _present(loaded, ("typer", "rich", "pydantic", "ukedge.host")) == []


def test_help_lists_every_command_without_importing_their_modules(tmp_path: Path) -> None:
    loaded = _loaded(["--help"], tmp_path)
    command_modules = tuple(f"ukedge.cli.{module}" for module, _ in _app._COMMANDS.values())
    heavy = ("ukedge.host", "ukedge.registry", "ukedge.vmm", "sqlalchemy", "httpx", "rich.progress")
    assert _present(loaded, command_modules + heavy + SERVER_AND_BUILD) == []


def test_ps_on_this_machine_loads_neither_the_parser_nor_rich_nor_pydantic(tmp_path: Path) -> None:
    loaded = _loaded(["ps", "-a"], tmp_path)
    assert "ukedge.cli._ps" in loaded  # the probe listed the (empty) node
    heavy = ("typer", "rich", "pydantic", "ukedge.image", "ukedge.cli.instances")
    assert _present(loaded, (*heavy, "ukedge.vmm.qemu", "ukedge.host._models")) == []


def test_ps_loads_no_server_builder_or_other_command(tmp_path: Path) -> None:
    loaded = _loaded(["--verbose", "ps"], tmp_path)  # a root option: typer runs the command
    assert "ukedge.cli.instances" in loaded  # the probe ran the command
    others = ("ukedge.cli.build", "ukedge.cli.kernel", "ukedge.cli.hub", "ukedge.cli.push")
    http = ("httpx", "ukedge.registry._client", "ukedge.registry._transfer")
    # The node's stores are read through sqlite3; SQLAlchemy is the servers' (issue 9.8). No
    # machine is spoken to: QMP and its asyncio stay out.
    servers_only = ("sqlalchemy", "ukedge.sqlite._engine", "ukedge.host.ondemand")
    servers_only += ("ukedge.vmm._qmp", "ukedge.vmm._snapshot", "qemu.qmp")
    assert _present(loaded, others + http + servers_only + SERVER_AND_BUILD) == []


def _first_paragraph(command: object) -> str:
    help_text = getattr(command, "short_help", None) or getattr(command, "help", None) or ""
    return inspect.cleandoc(help_text).split("\n\n")[0].replace("\n", " ").strip()


@pytest.mark.parametrize("name", list(_app._COMMANDS))
def test_listing_shows_each_commands_own_first_help_line(name: str) -> None:
    group = typer.main.get_command(_app.app)
    assert isinstance(group, _app.LazyGroup)
    assert _first_paragraph(group.commands[name]) == _app._COMMANDS[name][1]


def test_every_registered_command_is_in_the_table() -> None:
    """A command a module registers but the table misses would be unreachable."""
    for module in {module for module, _ in _app._COMMANDS.values()}:
        app = _app._typer()
        __import__(f"ukedge.cli.{module}", fromlist=["register"]).register(app)
        names = {
            c.name or typer.main.get_command_name(c.callback.__name__)  # type: ignore[union-attr]
            for c in app.registered_commands
        } | {g.name for g in app.registered_groups}
        assert {n: _app._COMMANDS.get(n, ("-",))[0] for n in names} == dict.fromkeys(names, module)


def test_a_command_that_prints_nothing_through_rich_does_not_import_it(tmp_path: Path) -> None:
    """``run`` streams the console itself; rich loads only when something is rendered."""
    loaded = _loaded(["--verbose", "ps", "-q"], tmp_path)  # an empty node: no ids to print
    assert "ukedge.cli.instances" in loaded
    assert _present(loaded, ("rich",)) == []


def test_run_opens_the_node_without_sqlalchemy_or_a_server(tmp_path: Path) -> None:
    """``run`` of an image the node lacks goes the whole local path up to the image lookup."""
    loaded = _loaded(["run", "--rm", "nope:404"], tmp_path)
    assert "ukedge.vmm.qemu" in loaded  # the node and its VM backend were opened
    assert _present(loaded, ("sqlalchemy", "httpx", "ukedge.server", *SERVER_AND_BUILD)) == []


def test_fleet_commands_load_no_server_and_no_other_command(tmp_path: Path) -> None:
    loaded = _loaded(["node", "ls"], tmp_path)  # fails at once: no controller here
    assert "ukedge.cli.nodes" in loaded
    others = ("ukedge.cli.deployments", "ukedge.cli.results", "ukedge.cli.controller")
    assert _present(loaded, others + SERVER_AND_BUILD) == []
