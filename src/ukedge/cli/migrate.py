"""``ukedge migrate``: move a running instance from the agent of ``--host`` to another agent, or
a replica of the controller's to another node (``--to NODE-NAME``); ``ukedge moves`` lists the
controller's moves."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated

import typer

from ukedge.cli._console import ago, err, out, print_json, print_table
from ukedge.cli._context import controller, node, remote_host
from ukedge.errors import MigrationError, UsageError

if TYPE_CHECKING:
    from ukedge.controller import FleetService, MoveRecord, ReplicaRecord

__all__ = ["cancel", "migrate", "moves", "moves_app", "register"]

moves_app = typer.Typer(
    help="List the controller's moves of replicas (under way; all with --all), or cancel one.",
    invoke_without_command=True,
)

#: How often a move through the controller is polled (it advances a heartbeat at a time).
_POLL_S = 0.5

_TARGET_TOKEN_ENV = "UKEDGE_TARGET_TOKEN"


def migrate(
    instance: str = typer.Argument(
        ...,
        help="Name, id or unique id prefix of a running instance (a controller's replica: "
        "its instance name, DEPLOYMENT-REPLICA).",
    ),
    to: str = typer.Option(
        ...,
        "--to",
        help="The target: a node's agent (http://HOST:PORT, tcp://HOST:PORT, unix:///PATH), or "
        "a node name the controller knows (the move goes through the controller).",
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
    postcopy: bool = typer.Option(
        False,
        "--postcopy",
        help="live: switch to post-copy after the first pass over RAM (bounds a busy guest's "
        "move); once switched, a failure loses the instance on both nodes.",
    ),
    compress: int = typer.Option(
        1,
        "--compress",
        min=0,
        max=9,
        help="zlib level of the stream (0: none; 9: slow links); a snapshot's chunks "
        "are compressed only while that gets them across sooner (not on a fast link).",
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

    Between two agents, --host names the source and --to the target's address (with its token).
    For a deployment's replica, --to names a node the controller knows (--controller, else
    UKEDGE_CONTROLLER): the controller asks that node for an offer and the replica's node for
    the move, both in their heartbeats, and records the replica on its new node (both agents
    need --migration-host). The host ports stay where the target has them free; `ukedge
    replicas` shows the new node and address. Ctrl-C stops following, not the move.

    Examples:

      ukedge -H http://edge1:7600 migrate agg --to http://edge2:7600 --to-token $T2

      ukedge -H http://edge1:7600 migrate agg --to http://edge2:7600 --mode live -p 18080:8080

      ukedge migrate web-3f9a1c2e --to edge-2 --mode live [--postcopy]
    """
    from ukedge.host import AgentClient, move_instance, parse_port_mapping
    from ukedge.host.migration import MigrationStatus, Mode

    if "://" not in to:
        agent_only = {
            "--to-token": to_token,
            "--publish": publish,
            "--downtime-limit": downtime_limit,
            "--compress": compress != 1 or None,
            "--no-auto-converge": not auto_converge or None,
        }
        given = [flag for flag, value in agent_only.items() if value]
        if given:
            raise UsageError(
                f"{', '.join(given)}: only for a move between two agents (--to http://…); a "
                "move through the controller keeps the replica's ports where it can"
            )
        _through_controller(instance, to, mode, postcopy, quiet=quiet, as_json=as_json)
        return

    if not remote_host():
        raise UsageError(
            "migrate moves an instance between two host agents: name the source with --host "
            "(or UKEDGE_HOST) and the target with --to"
        )
    try:
        chosen = Mode(mode)
    except ValueError:
        raise UsageError(f"--mode must be cold, snapshot or live, not {mode!r}") from None
    if postcopy and chosen is not Mode.LIVE:
        raise UsageError(f"--postcopy is for --mode live, not {chosen.value}")
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
                postcopy=postcopy,
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


def _through_controller(
    instance: str, to: str, mode: str, postcopy: bool, *, quiet: bool, as_json: bool
) -> None:
    if mode not in ("snapshot", "live"):
        raise UsageError(
            f"--mode {mode}: a move through the controller is snapshot or live (a cold move "
            "of a replica is what `ukedge node drain` does without --migrate)"
        )
    if postcopy and mode != "live":
        raise UsageError(f"--postcopy is for --mode live, not {mode}")
    client = controller()
    move = client.move(instance, to, mode=mode, postcopy=postcopy)
    shown = ""
    try:
        while move.state in ("offer", "moving"):
            line = "waiting for the target's offer" if move.state == "offer" else move.step
            if not (quiet or as_json) and line and line != shown:
                shown = line
                err.print(f"[dim]{instance}: {line}[/dim]")
            time.sleep(_POLL_S)
            move = client.get_move(move.id)
    except KeyboardInterrupt:
        err.print(f"stopped following; move {move.id} goes on (see `ukedge moves`)")
        raise typer.Exit(130) from None
    if as_json:
        print_json(move.model_dump(mode="json"))
    if move.state == "failed":
        raise MigrationError(
            f"moving {instance} to {move.target_name or move.target} failed: {move.error}; it "
            f"runs on at {move.source_name or move.source}",
            move.step or "prepare",
        )
    if as_json:
        return
    ports = ", ".join(
        f"{p.host_ip}:{p.host_port}->{p.guest_port}" for p in _reported(client, move).ports
    )
    took = move.updated_at - move.started_at
    err.print(
        f"moved {instance} from {move.source_name} to {move.target_name} ({move.mode}) in "
        f"{took:.1f} s" + (f"; ports {ports}" if ports else "")
    )
    out.print(instance)


#: How long to wait for the target's first report of a moved replica (its address).
_REPORT_WAIT_S = 30.0


def _reported(client: FleetService, move: MoveRecord) -> ReplicaRecord:
    """The moved replica's record once its new node has reported it (a heartbeat or two
    after the move: only then are its ports there known), or as it is after a while."""
    deadline = time.monotonic() + _REPORT_WAIT_S
    while True:
        found = [
            r for r in client.replicas(deployment=move.deployment) if r.replica == move.replica
        ]
        if not found:
            raise UsageError(f"replica {move.replica} of {move.deployment} is gone")
        replica = found[0]
        if replica.node_id == move.target and replica.instance_state is not None:
            return replica
        if time.monotonic() > deadline:
            return replica
        time.sleep(_POLL_S)


def moves(
    ctx: typer.Context,
    all_moves: bool = typer.Option(
        False, "--all", "-a", help="Also the moves that ended (done or failed)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the controller's moves of replicas (under way; all with --all).

    Newest first: those of `ukedge migrate --to NODE` and `ukedge node drain --migrate`. A
    move asks the target node for an offer (offer), then the replica's node moves the instance
    (moving, with its step), and ends done (the replica runs on the target) or failed (it runs
    on where it was; the error says why). `ukedge moves cancel ID` cancels one.
    """
    if ctx.invoked_subcommand is not None:
        return
    listed = controller().moves(active=not all_moves)
    if as_json:
        print_json([m.model_dump(mode="json") for m in listed])
        return
    print_table(
        ["MOVE", "INSTANCE", "FROM", "TO", "MODE", "TRY", "STATE", "STEP", "STARTED", "ERROR"],
        [_row(m) for m in listed],
    )


def _row(move: MoveRecord) -> tuple[str, ...]:
    return (
        move.id,
        move.instance,
        move.source_name or move.source,
        move.target_name or move.target,
        move.mode,
        str(move.attempt),
        move.state,
        move.step or "-",
        ago(move.started_at) + " ago",
        move.error or "",
    )


def cancel(
    move_id: str = typer.Argument(..., metavar="ID", help="The move's id (`ukedge moves`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the move as JSON."),
) -> None:
    """Cancel a move of the controller's.

    One waiting for the target's offer ends at once; one under way is cancelled by the
    replica's node at its next heartbeat, which resumes the instance where it was (the move
    then ends failed). Refused once the move has ended (done: the replica runs on the target).
    A drain with --migrate replaces a replica whose move was cancelled.
    """
    move = controller().cancel_move(move_id)
    if as_json:
        print_json(move.model_dump(mode="json"))
        return
    what = "cancelled" if move.state == "failed" else "cancelling (at its node's next heartbeat)"
    out.print(f"move {move.id} of {move.instance}: {what}")


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
    moves_app.callback()(moves)
    moves_app.command("cancel")(cancel)
    app.add_typer(moves_app, name="moves")
