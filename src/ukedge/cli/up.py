"""``ukedge up``: a controller, a hub and a local host agent in one process (a fleet of one)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ukedge.cli._console import err, out

if TYPE_CHECKING:
    from ukedge.controller import UpInfo

__all__ = ["register", "up"]


def _ready(info: UpInfo) -> None:
    lines = [
        f"ukedge up: ready (node {info.node_name})",
        f"  controller  {info.controller_url}",
        f"  hub         {info.hub}   (push: ukedge push {info.hub}/NAME:TAG)",
        f"  agent       {info.agent_url} and unix://{info.agent_socket}",
        "Use them from another shell:",
        *(f"  {line}" for line in info.exports()),
        f"  ukedge deploy NAME --image {info.hub}/NAME:TAG --replicas 2",
        "  ukedge replicas; ukedge results -f",
        "Ctrl-C stops the deployed instances and the three servers.",
    ]
    out.print("\n".join(lines), markup=False, highlight=False)
    sys.stdout.flush()  # a script waiting for this line may read it through a pipe


def up(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="One directory for all three (DIR/controller, DIR/hub, DIR/agent) "
            "[each server's default under <UKEDGE_HOME>].",
        ),
    ] = None,
    addr_controller: Annotated[
        str, typer.Option("--addr-controller", help="HOST:PORT of the controller (HTTPS).")
    ] = "127.0.0.1:7700",
    addr_hub: Annotated[str, typer.Option("--addr-hub", help="HOST:PORT of the hub.")] = (
        "127.0.0.1:5000"
    ),
    addr_agent: Annotated[
        str, typer.Option("--addr-agent", help="HOST:PORT of the agent's REST API.")
    ] = "127.0.0.1:7600",
    name: Annotated[
        str | None, typer.Option("--name", help="The local node's name [this machine's].")
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", help="Server logs (stderr): text or json.")
    ] = "text",
) -> None:
    """Run a fleet of one: a controller, a hub and a local host agent, in the foreground.

    The agent enrols with the controller by itself (a one-use join token, the first time) and
    pulls image names without a registry from the hub. Without --data the servers keep their
    state where `ukedge controller serve`, `hub serve` and `host serve` keep theirs, so the CLI
    here needs nothing set; with --data it prints what to export.

    Ctrl-C or SIGTERM stops, like `docker compose up` in the foreground: the instances the
    controller deployed on the agent are stopped and removed (their results reach the
    controller first), then the three servers. The deployments stay: the next `ukedge up` on
    the same data runs them again. Instances started by hand (`ukedge run --host`) keep
    running, as with any agent. A second Ctrl-C quits at once, leaving the instances running
    (the next start adopts them).

    Example: ukedge up; then ukedge push 127.0.0.1:5000/sensor-agg:1 and
    ukedge deploy sensor-agg --image 127.0.0.1:5000/sensor-agg:1
    """
    from ukedge import config
    from ukedge.controller import UpSettings
    from ukedge.controller import up as run_up
    from ukedge.errors import UsageError

    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format {log_format!r}: expected text or json")
    for flag, value in (
        ("--addr-controller", addr_controller),
        ("--addr-hub", addr_hub),
        ("--addr-agent", addr_agent),
    ):
        try:
            config.check_listen_addr(value, example="127.0.0.1:7700")
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    settings = UpSettings(
        data_dir=data,
        controller_addr=addr_controller,
        hub_addr=addr_hub,
        agent_addr=addr_agent,
        node_name=name,
        log_format="json" if log_format == "json" else "text",
    )
    err.print("starting the controller, the hub and the local agent…", markup=False)
    run_up(settings, on_ready=_ready)


def register(root: typer.Typer) -> None:
    root.command("up")(up)
