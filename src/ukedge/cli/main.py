"""Entry point of the ``ukedge`` command.

Each command group lives in its own module and registers itself here; errors from the packages
below are ukedge errors, printed as one line with the exit code their class names.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from ukedge import __version__
from ukedge.cli import _context
from ukedge.cli._console import err
from ukedge.errors import UkedgeError

__all__ = ["app", "main"]

app = typer.Typer(
    name="ukedge",
    help=(
        "Build, ship and run applications as unikernel VMs.\n\n"
        "A typical first run: `ukedge kernel build`, `ukedge build examples/hello-c -t hello-c:1`, "
        "`ukedge run hello-c:1`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ukedge {__version__}")
        raise typer.Exit()


#: Commands that work on this machine's files whatever --host says (docker builds on the daemon;
#: ukedge builds here, and ships images through a hub).
_LOCAL_ONLY = frozenset({"build", "push", "tag", "login", "logout", "kernel", "hub", "doctor"})


@app.callback()
def _root(
    ctx: typer.Context,
    host: str = typer.Option(
        None,
        "--host",
        "-H",
        envvar="UKEDGE_HOST",
        help="Act on the host agent at this address (unix:///PATH, tcp://HOST:PORT, "
        "http://HOST:PORT) instead of this machine.",
    ),
    token: str = typer.Option(
        None,
        "--token",
        envvar="UKEDGE_HOST_TOKEN",
        help="The agent's bearer token (for TCP; on the agent's own machine it is read from "
        "<UKEDGE_HOME>/agent/token).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _context.set_target(host, token)
    if ctx.invoked_subcommand in _LOCAL_ONLY:
        _context.local_only(ctx.invoked_subcommand)
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("UKEDGE_LOG", "WARNING"))
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # qemu.qmp logs a refused connection at ERROR; for us that is a machine that has just
        # ended, which the command reports in its own words.
        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


# Command groups register themselves below (one import and one line each).
# -- registrations --
from ukedge.cli import doctor, images, instances  # noqa: E402

images.register(app)
instances.register(app)
app.command("doctor")(doctor.doctor)

from ukedge.cli import kernel  # noqa: E402

app.add_typer(kernel.app, name="kernel")

from ukedge.cli import login, pull, push, search, tags  # noqa: E402

for _registry_cmds in (push, pull, login, tags, search):
    _registry_cmds.register(app)

from ukedge.cli import build  # noqa: E402

build.register(app)

from ukedge.cli import hub  # noqa: E402

app.add_typer(hub.app, name="hub")

from ukedge.cli import host  # noqa: E402

app.add_typer(host.app, name="host")
app.command("info")(host.info)


def main() -> None:
    try:
        app()
    except UkedgeError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, style="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
