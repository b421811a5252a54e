"""``ukedge migrate``: move a running instance from the agent of ``--host`` to another agent."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ukedge.cli._console import err, out, print_json
from ukedge.cli._context import node, remote_host
from ukedge.errors import UsageError

__all__ = ["migrate", "register"]

_TARGET_TOKEN_ENV = "UKEDGE_TARGET_TOKEN"


def migrate(
    instance: str = typer.Argument(..., help="Name, id or unique id prefix of a running instance."),
    to: str = typer.Option(
        ...,
        "--to",
        help="The target node's agent: http://HOST:PORT, tcp://HOST:PORT or unix:///PATH.",
    ),
    to_token: str = typer.Option(
        None,
        "--to-token",
        envvar=_TARGET_TOKEN_ENV,
        help="The target agent's bearer token.",
    ),
    mode: str = typer.Option(
        "snapshot",
        "--mode",
        help="cold: boot a new one there, wait until healthy, stop this one (no memory kept). "
        "snapshot: pause, copy memory and devices, resume there. live: copy memory while "
        "the app runs, pause only for the last dirty pages.",
    ),
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "--publish",
            "-p",
            help="Host ports on the target, [HOST_IP:]HOST_PORT:GUEST_PORT; repeatable "
            "(default: the instance's own, which must be free there).",
        ),
    ] = None,
    downtime_limit: int | None = typer.Option(
        None,
        "--downtime-limit",
        min=1,
        max=60_000,
        help="live: the pause QEMU aims for, in ms [the source agent's "
        "migrate_downtime_limit_ms, 300 unless set].",
    ),
    auto_converge: bool = typer.Option(
        True,
        "--auto-converge/--no-auto-converge",
        help="live: slow a guest down that dirties memory faster than the link carries it.",
    ),
    compress: int = typer.Option(
        1, "--compress", min=0, max=9, help="zlib level of the stream (0: none; 9: slow links)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress."),
    as_json: bool = typer.Option(False, "--json", help="Print the move's status as JSON."),
) -> None:
    """Move a running instance to another node, with its state.

    The instance keeps its id, name, restart count, health history and results numbering;
    its node and host ports change (the new ports are printed). The two agents talk over TLS
    (the target's certificate is pinned, a one-time ticket admits the move); QEMU's incoming
    side listens on a Unix socket only. Any failure, or Ctrl-C, before the target has taken
    over leaves the instance running here and nothing on the target.

    Examples:

      ukedge -H http://edge1:7600 migrate agg --to http://edge2:7600 --to-token $T2

      ukedge -H http://edge1:7600 migrate agg --to http://edge2:7600 --mode live -p 18080:8080
    """
    from ukedge.host import AgentClient, move_instance, parse_port_mapping
    from ukedge.host.migration import MigrationStatus, Mode

    if not remote_host():
        raise UsageError(
            "migrate moves an instance between two host agents: name the source with --host "
            "(or UKEDGE_HOST) and the target with --to"
        )
    try:
        chosen = Mode(mode)
    except ValueError:
        raise UsageError(f"--mode must be cold, snapshot or live, not {mode!r}") from None
    ports = [parse_port_mapping(p) for p in publish or []] or None
    source = node()
    assert isinstance(source, AgentClient)
    target = AgentClient(to, token=to_token or os.environ.get(_TARGET_TOKEN_ENV))
    shown: dict[str, str] = {}

    def progress(status: MigrationStatus) -> None:
        if quiet or as_json:
            return
        line = f"{status.step.value}"
        if status.state_bytes:
            line += f" {status.sent_bytes / 1e6:.1f} MB sent of {status.state_bytes / 1e6:.1f} MB"
        if shown.get("line") != line:
            shown["line"] = line
            err.print(f"[dim]{status.name}: {line}[/dim]")

    try:
        with target:
            status = move_instance(
                source,
                instance,
                target,
                mode=chosen,
                ports=ports,
                compress=compress,
                downtime_limit_ms=downtime_limit,
                auto_converge=auto_converge,
                on_status=progress,
            )
    except KeyboardInterrupt:
        err.print("cancelled; the instance runs on here")
        raise typer.Exit(130) from None
    if as_json:
        print_json(status.model_dump(mode="json"))
        return
    took = (status.finished_at or status.started_at) - status.started_at
    ports_text = ", ".join(
        f"{p.host_ip}:{p.host_port}->{p.guest_port}/{p.protocol}" for p in status.target_ports
    )
    paused = f", paused {status.paused_s * 1000:.0f} ms" if status.paused_s is not None else ""
    err.print(
        f"moved {status.name} to {status.target} ({chosen.value}) in {took:.2f} s{paused}; "
        f"{status.sent_bytes / 1e6:.1f} MB sent" + (f"; ports {ports_text}" if ports_text else "")
    )
    if status.error:
        err.print(f"[yellow]warning:[/yellow] {status.error}")
    out.print(status.instance_id)


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
