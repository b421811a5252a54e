"""The ``ukedge`` command's root: its global options and the table of its commands.

Each command group lives in its own module, imported only when one of its commands runs
(``_COMMANDS`` names them with their one-line help for the listing).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import typer

from ukedge import __version__
from ukedge.cli import _context
from ukedge.cli._lazy import LazyGroup, Spec

__all__ = ["app"]

#: Every command of the root group, in help order: name -> (module under ``ukedge.cli`` whose
#: ``register(app)`` adds it, one-line help for ``ukedge --help``). A command's module is
#: imported only when that command runs.
_COMMANDS: dict[str, Spec] = {
    "images": ("images", "List the node's images (sizes are compressed, as pushed)."),
    "tag": ("images", "Give an image another name; both names share the same blobs."),
    "rmi": ("images", "Untag images and delete blobs that no other image uses."),
    "run": ("instances", "Boot an image as a unikernel VM."),
    "start": (
        "instances",
        "Start ended instances again (same image, settings and logs; the policy's count resets).",
    ),
    "ps": ("instances", "List instances (running ones unless -a)."),
    "logs": (
        "instances",
        "Print an instance's console output (or, with --results, its results device).",
    ),
    "stop": (
        "instances",
        "Stop instances gracefully: SIGTERM to the app, kill after --time seconds.",
    ),
    "kill": ("instances", "Kill instances at once (the VM is ended without warning the app)."),
    "rm": ("instances", "Remove ended instances and their logs (running ones need --force)."),
    "inspect": ("instances", "Print an instance's (or else an image's) full record as JSON."),
    "stats": (
        "instances",
        "Show what each instance's VM costs the host: memory (RSS, and PSS, which shares the "
        "mapped kernel among its users) and CPU time.",
    ),
    "events": (
        "instances",
        "Follow instance state changes as they happen (create, start, die, restart, health…).",
    ),
    "migrate": (
        "migrate",
        "Move a running instance to another node, with its state.",
    ),
    "doctor": (
        "doctor",
        "Check QEMU, the accelerator (KVM or TCG), the platforms this host runs, built kernels, "
        "tools and memory.",
    ),
    "push": (
        "push",
        "Push an image: only the blobs the registry lacks; shared layers are mounted.",
    ),
    "pull": (
        "pull",
        "Pull an image: only the blobs the node lacks, each verified against its digest.",
    ),
    "login": (
        "login",
        "Check credentials with the registry (its token flow) and save them for push and pull.",
    ),
    "logout": ("login", "Forget the saved credentials of a registry."),
    "tags": ("tags", "List the tags of a repository, one per line."),
    "sign": ("sign", "Sign an image in its registry (an index: with each platform's manifest)."),
    "verify": (
        "sign",
        "Verify an image's signatures against trusted public keys; exit 1 unless all verify.",
    ),
    "key": ("sign", "Make signing keys (cosign's format: PREFIX.key, encrypted, and PREFIX.pub)."),
    "search": (
        "search",
        "Search the registry's catalog: repository names, and the name and labels of each image.",
    ),
    "build": (
        "build",
        "Build an image from DIR/Ukfile into the local store (same inputs give the same digest).",
    ),
    "info": (
        "host",
        "Describe the node: CPUs, memory allocatable and committed, accelerator, image cache.",
    ),
    "image": ("images", "Manage images in the local store (an OCI image layout)."),
    "kernel": ("kernel", "Build and list kernel profiles."),
    "hub": ("hub", "Run and administer the ukedge hub (an OCI registry)."),
    "host": ("host", "Run the host agent of an edge node."),
    "controller": (
        "controller",
        "Run the controller (the cloud centre of a fleet) and manage its join tokens.",
    ),
    "node": ("nodes", "List and manage the fleet's edge nodes (through the controller)."),
    "deploy": (
        "deployments",
        "Deploy an app to the fleet, from a deployment file or flags.",
    ),
    "deployments": ("deployments", "List, inspect and remove the fleet's deployments."),
    "scale": ("deployments", "Set how many replicas a deployment runs."),
    "rollout": (
        "deployments",
        "Follow a deployment's rollout, list its revisions, or go back to an earlier one.",
    ),
    "replicas": (
        "deployments",
        "List the fleet's replicas: where each runs, its state and its host ports.",
    ),
    "moves": (
        "migrate",
        "List the controller's moves of replicas (under way; all with --all), or cancel one.",
    ),
    "results": (
        "results",
        "Print the results the fleet's apps delivered to the controller (-f: follow live).",
    ),
    "bench": ("bench", "Measure ukedge against other ways of running the same app."),
    "up": (
        "up",
        "Run a fleet of one: a controller, a hub and a local host agent, in the foreground.",
    ),
}


def _typer(**settings: Any) -> typer.Typer:
    """A Typer with the root's rendering settings (the lazily built commands share them)."""
    return typer.Typer(rich_markup_mode="markdown", **settings)


#: Docker commands that have no meaning for a unikernel, answered with what to use instead.
_UNAVAILABLE = {
    "exec": "a unikernel runs one application and has no shell or other program to execute; "
    "follow its console with `ukedge logs -f NAME`, its results with `ukedge logs --results NAME`, "
    "and rebuild the image to change what it runs",
    "attach": "use `ukedge logs -f NAME` to follow an instance's console (a unikernel reads no "
    "terminal input; `ukedge run` without -d streams the console until the app ends)",
}


class _Root(LazyGroup):
    table = _COMMANDS
    scratch = staticmethod(_typer)
    unavailable = _UNAVAILABLE


app = _typer(
    cls=_Root,
    name="ukedge",
    help=(
        "Build, ship and run applications as unikernel VMs.\n\n"
        "A typical first run: `ukedge kernel build`, `ukedge build examples/hello-c -t hello-c:1`, "
        "`ukedge run hello-c:1`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ukedge {__version__}")  # main() answers a lone --version the same way
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
    controller: str = typer.Option(
        None,
        "--controller",
        help="The controller the fleet commands (node, deploy, results…) talk to, "
        "https://HOST:PORT [UKEDGE_CONTROLLER, else https://127.0.0.1:7700].",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _context.set_target(host, token)
    _context.set_controller(controller)
    ctx.call_on_close(_context.close_controller)
    if ctx.invoked_subcommand in _LOCAL_ONLY:
        _context.local_only(ctx.invoked_subcommand)
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("UKEDGE_LOG", "WARNING"))
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # qemu.qmp logs a refused connection at ERROR; for us that is a machine that has just
        # ended, which the command reports in its own words.
        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
