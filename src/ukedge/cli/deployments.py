"""Fleet deployments through the controller: ``deploy``, ``deployments ls|inspect|rm``,
``scale``, ``rollout status|history|undo`` and ``replicas``.

The spec comes from :func:`ukedge.controller.deployment_spec` (file and flags, checked before
anything is sent); these commands only send it and draw what the controller answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ukedge.cli._console import ago, err, out, print_json, print_table, when
from ukedge.cli._context import controller
from ukedge.errors import ControllerError

if TYPE_CHECKING:
    from ukedge.controller import (
        Deployment,
        FleetService,
        ReplicaRecord,
        Revision,
        RolloutStatus,
    )

__all__ = [
    "deploy",
    "deployments_app",
    "register",
    "render_deployments",
    "render_replicas",
    "render_revisions",
    "rollout_app",
    "rollout_line",
]

deployments_app = typer.Typer(
    help="List, inspect and remove the fleet's deployments.", no_args_is_help=True
)
rollout_app = typer.Typer(
    help="Follow a deployment's rollout, list its revisions, or go back to an earlier one.",
    no_args_is_help=True,
)

_JSON = typer.Option("--json", help="Print JSON instead of a table.")
_NAME = typer.Argument(help="Deployment name.")
_WAIT = typer.Option(
    "--wait", "-w", help="Follow the rollout until it completes (exit 1 if it rolls back)."
)


# -- rendering ----------------------------------------------------------------------------------


def rollout_line(rollout: RolloutStatus) -> str:
    """``revision 3 progressing: 2/3 updated, 1 ready, 0 unavailable`` (and the reason)."""
    line = (
        f"revision {rollout.revision} {rollout.state}: {rollout.updated}/{rollout.desired} "
        f"updated, {rollout.ready} ready, {rollout.unavailable} unavailable"
    )
    return f"{line} ({rollout.message})" if rollout.message else line


def render_deployments(deployments: Sequence[Deployment], *, as_json: bool) -> None:
    if as_json:
        print_json([d.model_dump(mode="json") for d in deployments])
        return
    print_table(
        ["NAME", "MODE", "IMAGE", "REVISION", "READY", "ROLLOUT", "UPDATED"],
        [
            (
                d.name,
                d.spec.mode,
                d.spec.image,
                d.revision,
                f"{d.rollout.ready}/{d.rollout.desired}",
                d.rollout.state,
                ago(d.updated_at) + " ago",
            )
            for d in deployments
        ],
    )


def render_revisions(revisions: Sequence[Revision], current: int, *, as_json: bool) -> None:
    if as_json:
        print_json([r.model_dump(mode="json") for r in revisions])
        return
    print_table(
        ["REVISION", "IMAGE", "PLATFORMS", "REPLICAS", "CREATED", ""],
        [
            (
                r.revision,
                r.image_digest,
                ",".join(p.removeprefix("linux/") for p in r.platforms) or "-",
                r.spec.replicas if r.spec.mode == "replicated" else "per-node",
                when(r.created_at),
                "current" if r.revision == current else "",
            )
            for r in revisions
        ],
    )


def render_replicas(replicas: Sequence[ReplicaRecord], *, as_json: bool) -> None:
    if as_json:
        print_json([r.model_dump(mode="json") for r in replicas])
        return
    print_table(
        ["DEPLOYMENT", "REPLICA", "REVISION", "NODE", "INSTANCE", "STATE", "HEALTH", "PORTS"],
        [
            (
                r.deployment,
                r.replica,
                r.revision,
                r.node_name or r.node_id or "-",
                r.instance or "-",
                r.instance_state.value if r.instance_state is not None else r.state,
                r.health.value if r.health is not None else "-",
                ",".join(f"{p.host_ip}:{p.host_port}->{p.guest_port}" for p in r.ports) or "-",
            )
            for r in replicas
        ],
    )


def _follow(client: FleetService, deployment: Deployment) -> None:
    """Draw the rollout of ``deployment``'s revision until it settles; raise if it did not
    complete. A bar on a terminal, a line per change otherwise (logs, CI)."""
    name, revision = deployment.name, deployment.revision
    last = deployment
    watch = client.watch_rollout(name, revision)
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
        )
        with Progress(*columns, console=err) as bar:
            task = bar.add_task(f"{name} revision {revision}", total=None, detail="")
            for last in watch:
                rollout = last.rollout
                bar.update(
                    task,
                    total=max(rollout.desired, 1),
                    completed=min(rollout.updated, max(rollout.desired, 1)),
                    detail=f"{rollout.ready} ready, {rollout.unavailable} unavailable, "
                    f"{rollout.state}",
                )
    else:
        for last in watch:
            err.print(f"{name} {rollout_line(last.rollout)}", markup=False)
    rollout = last.rollout
    if rollout.state == "complete":
        err.print(f"{name}: revision {rollout.revision} rolled out", markup=False)
        return
    raise ControllerError(f"{name}: the rollout did not complete: {rollout_line(rollout)}")


def _print_deployment(
    client: FleetService, deployment: Deployment, *, wait: bool, as_json: bool
) -> None:
    if as_json:
        print_json(deployment.model_dump(mode="json"))
    else:
        out.print(f"{deployment.name} revision {deployment.revision}", markup=False)
    if wait:
        _follow(client, deployment)


# -- commands -----------------------------------------------------------------------------------


def deploy(
    name: Annotated[
        str | None, typer.Argument(help="Deployment name (with -f: overrides the file's).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="Deployment file (TOML, the fields of a deployment spec)."
        ),
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Image reference the nodes pull.")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", help="How many replicas [1].")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="replicated, or per-node: one replica on every matching node, including "
            "nodes that join later [replicated].",
        ),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", "-m", help="Guest memory of each replica, e.g. 64M [image's]."),
    ] = None,
    cpus: Annotated[
        int | None, typer.Option("--cpus", help="vCPUs of each replica [image's].")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE. Repeatable.")
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "--publish", "-p", help="[HOST_IP:]HOST_PORT:GUEST_PORT on each node. Repeatable."
        ),
    ] = None,
    restart: Annotated[
        str | None,
        typer.Option("--restart", help="no, on-failure[:N] or always [on-failure]."),
    ] = None,
    selector: Annotated[
        list[str] | None,
        typer.Option("--selector", help="Only nodes with this label, KEY=VALUE. Repeatable."),
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch",
            help="Only nodes of this architecture: amd64 / x86_64, arm64 / aarch64 or "
            "linux/arm64. Repeatable.",
        ),
    ] = None,
    spread_by: Annotated[
        str | None,
        typer.Option("--spread-by", help="Spread replicas evenly over this label's values."),
    ] = None,
    max_surge: Annotated[
        int | None,
        typer.Option("--max-surge", help="Rolling update: replicas above the count [1]."),
    ] = None,
    max_unavailable: Annotated[
        int | None,
        typer.Option("--max-unavailable", help="Rolling update: replicas below the count [0]."),
    ] = None,
    autonomy: Annotated[
        str | None,
        typer.Option(
            "--autonomy",
            help="Leave an unreachable node's replicas alone this long (e.g. 10m) before "
            "replacing them: for apps where a duplicate is worse than a gap [0].",
        ),
    ] = None,
    on_demand: Annotated[
        bool,
        typer.Option(
            "--on-demand", help="Scale each replica to zero; boot on the first connection."
        ),
    ] = False,
    require_signature: Annotated[
        bool,
        typer.Option(
            "--require-signature",
            help="Refuse the rollout unless the image is signed by a key the controller trusts.",
        ),
    ] = False,
    wait: Annotated[bool, _WAIT] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the deployment as JSON.")] = False,
) -> None:
    """Deploy an app to the fleet, from a deployment file or flags.

    The first deploy of a name creates it; a later one with any change makes a new revision,
    rolled out a few replicas at a time (--max-surge, --max-unavailable), each node pulling
    the new image before it switches. When the new revision's replicas fail their health
    checks the controller stops the rollout and goes back by itself; --wait exits 1 then.

    The file has the spec's field names: name, image, replicas, mode, memory_mib (or "64M"),
    vcpus, args, env, ports (["18080:8080"]), restart ("on-failure:3"), on_demand, autonomy_s
    (or "10m"), require_signature, and the tables [placement] (selector, architectures,
    spread_by) and [strategy] (max_surge, max_unavailable). Flags given with -f override the
    file's fields.

    Examples: ukedge deploy -f sensor-agg.toml --wait;
    ukedge deploy web --image hub.local:5000/web:2 --replicas 3 --spread-by zone -p 8080:8080;
    ukedge deploy probe --image probe:1 --mode per-node --selector site=b
    """
    from ukedge.controller import deployment_spec

    spec = deployment_spec(
        file,
        name=name,
        image=image,
        replicas=replicas,
        mode=mode,
        memory=memory,
        cpus=cpus,
        env=env or (),
        ports=publish or (),
        restart=restart,
        selector=selector or (),
        architectures=arch or (),
        spread_by=spread_by,
        max_surge=max_surge,
        max_unavailable=max_unavailable,
        autonomy=autonomy,
        on_demand=on_demand or None,
        require_signature=require_signature or None,
    )
    client = controller()
    _print_deployment(client, client.deploy(spec), wait=wait, as_json=as_json)


@deployments_app.command("ls")
def deployments_ls(as_json: Annotated[bool, _JSON] = False) -> None:
    """List deployments: image, revision, replicas ready of desired, rollout state."""
    render_deployments(controller().deployments(), as_json=as_json)


@deployments_app.command("inspect")
def deployments_inspect(name: Annotated[str, _NAME]) -> None:
    """Print a deployment (spec, revision, rollout) as JSON."""
    print_json(controller().deployment(name).model_dump(mode="json"))


@deployments_app.command("rm")
def deployments_rm(
    names: Annotated[list[str], typer.Argument(help="Deployment names.")],
) -> None:
    """Remove deployments: their replicas stop on every node."""
    client = controller()
    for name in names:
        client.delete_deployment(name)
        out.print(name, markup=False)


def scale(
    name: Annotated[str, _NAME],
    replicas: Annotated[int, typer.Argument(min=0, help="Replica count.")],
    wait: Annotated[bool, _WAIT] = False,
) -> None:
    """Set how many replicas a deployment runs.

    Scaling makes no new revision. Example: ukedge scale sensor-agg 5 --wait
    """
    client = controller()
    _print_deployment(client, client.scale(name, replicas), wait=wait, as_json=False)


@rollout_app.command("status")
def rollout_status(
    name: Annotated[str, _NAME],
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow until the rollout settles.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Print where the rollout of a deployment's current revision is.

    States: progressing, complete, rolled-back (the new revision failed its health checks and
    the previous one was restored), failed (nothing to go back to).
    """
    client = controller()
    deployment = client.deployment(name)
    if watch:
        _follow(client, deployment)
    elif as_json:
        print_json(deployment.rollout.model_dump(mode="json"))
    else:
        out.print(f"{name} {rollout_line(deployment.rollout)}", markup=False)


@rollout_app.command("history")
def rollout_history(name: Annotated[str, _NAME], as_json: Annotated[bool, _JSON] = False) -> None:
    """List a deployment's revisions: the pinned image digest, replicas, when it was made."""
    client = controller()
    current = client.deployment(name).revision
    render_revisions(client.revisions(name), current, as_json=as_json)


@rollout_app.command("undo")
def rollout_undo(
    name: Annotated[str, _NAME],
    to_revision: Annotated[
        int | None,
        typer.Option("--to-revision", min=1, help="Revision to go back to [the previous]."),
    ] = None,
    wait: Annotated[bool, _WAIT] = False,
) -> None:
    """Roll a deployment back to an earlier revision (a rollout like any other).

    Example: ukedge rollout undo web --to-revision 2 --wait
    """
    client = controller()
    _print_deployment(client, client.rollback(name, to_revision), wait=wait, as_json=False)


def replicas(
    deployment: Annotated[
        str | None, typer.Option("--deployment", "-d", help="Only this deployment's.")
    ] = None,
    node: Annotated[str | None, typer.Option("--node", "-n", help="Only on this node.")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List the fleet's replicas: where each runs, its state and its host ports.

    A replica moved to another node (`node drain --migrate`, `migrate --to NODE`) shows its new
    node and address once that node has reported it."""
    render_replicas(controller().replicas(deployment=deployment, node=node), as_json=as_json)


def register(root: typer.Typer) -> None:
    root.command("deploy")(deploy)
    root.add_typer(deployments_app, name="deployments")
    root.command("scale")(scale)
    root.add_typer(rollout_app, name="rollout")
    root.command("replicas")(replicas)
