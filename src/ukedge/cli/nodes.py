"""``ukedge node ls|inspect|label|cordon|uncordon|drain|rm``: the fleet's edge nodes, as the
controller sees them (``--controller URL``, else ``UKEDGE_CONTROLLER``, else the local one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from ukedge.cli._console import ago, out, print_json, print_table
from ukedge.cli._context import controller
from ukedge.errors import UsageError

if TYPE_CHECKING:
    from ukedge.controller import NodeRecord

__all__ = ["app", "label_changes", "node_status", "register", "render_nodes"]

app = typer.Typer(
    help="List and manage the fleet's edge nodes (through the controller).",
    no_args_is_help=True,
)

_JSON = typer.Option("--json", help="Print JSON instead of a table.")
_NODES = typer.Argument(help="Node names or ids.")


def node_status(node: NodeRecord) -> str:
    """``Ready``, ``NotReady``, with what keeps new replicas away (``Ready,Cordoned``)."""
    words = ["Ready" if node.status.value == "ready" else "NotReady"]
    if node.cordoned:
        words.append("Cordoned")
    if node.draining:
        words.append(f"Draining({node.drain_migrate})" if node.drain_migrate else "Draining")
    return ",".join(words)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def render_nodes(nodes: Sequence[NodeRecord], *, as_json: bool) -> None:
    if as_json:
        print_json([n.model_dump(mode="json") for n in nodes])
        return
    print_table(
        [
            "NAME",
            "NODE ID",
            "STATUS",
            "ARCH",
            "MEMORY (MiB)",
            "VCPUS",
            "INSTANCES",
            "HEARTBEAT",
            "LABELS",
        ],
        [
            (
                n.name,
                n.id[:12],
                node_status(n),
                n.architecture,
                f"{n.allocated_memory_mib}/{n.capacity_memory_mib}",
                f"{n.allocated_vcpus}/{n.capacity_vcpus}",
                n.instances,
                "never" if n.last_heartbeat is None else ago(n.last_heartbeat) + " ago",
                _labels(n.labels),
            )
            for n in nodes
        ],
    )


def label_changes(items: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``k=v`` sets a label, ``k-`` removes one (as ``kubectl label``)."""
    to_set: dict[str, str] = {}
    to_remove: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key:
            to_set[key] = value
        elif not sep and item.endswith("-") and len(item) > 1:
            to_remove.append(item[:-1])
        else:
            raise UsageError(f"invalid label change {item!r}: expected KEY=VALUE or KEY-")
    both = set(to_set) & set(to_remove)
    if both:
        raise UsageError(f"label {sorted(both)[0]!r} is both set and removed")
    return to_set, to_remove


@app.command("ls")
def ls(as_json: Annotated[bool, _JSON] = False) -> None:
    """List the nodes: status, memory and vCPUs allocated of capacity, instances, heartbeat.

    NotReady: no heartbeat for a while (15 s by default); its replicas are placed elsewhere
    after the controller's grace period. Cordoned: takes no new replicas. Draining: its
    replicas are being replaced elsewhere; Draining(live) or Draining(snapshot): they move
    with their memory (`node drain --migrate`).
    """
    render_nodes(controller().nodes(), as_json=as_json)


@app.command()
def inspect(node: Annotated[str, typer.Argument(help="Node name or id.")]) -> None:
    """Print a node's full record as JSON."""
    print_json(controller().node(node).model_dump(mode="json"))


@app.command()
def label(
    node: Annotated[str, typer.Argument(help="Node name or id.")],
    changes: Annotated[list[str], typer.Argument(help="KEY=VALUE to set, KEY- to remove.")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Set or remove labels of a node (placement selectors and spread match them).

    Examples: ukedge node label edge-7 zone=b gpu=yes; ukedge node label edge-7 gpu-
    """
    to_set, to_remove = label_changes(changes)
    render_nodes([controller().label_node(node, to_set, to_remove)], as_json=as_json)


@app.command()
def cordon(nodes: Annotated[list[str], _NODES]) -> None:
    """Take no new replicas on these nodes; what runs there stays."""
    client = controller()
    for key in nodes:
        out.print(client.cordon(key).name)


@app.command()
def uncordon(nodes: Annotated[list[str], _NODES]) -> None:
    """Let these nodes take new replicas again (ends a drain too)."""
    client = controller()
    for key in nodes:
        out.print(client.uncordon(key).name)


@app.command()
def drain(
    nodes: Annotated[list[str], _NODES],
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate",
            help="Move each running replica with its memory (same instance id, its counts and "
            "windows kept) instead of starting a fresh one elsewhere.",
        ),
    ] = False,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="With --migrate: snapshot (pause, copy, resume there) or live (copy while it "
            "runs, pause only for the last pages).",
        ),
    ] = "snapshot",
    postcopy: Annotated[
        bool,
        typer.Option(
            "--postcopy",
            help="With --migrate --mode live: each move switches to post-copy after the first "
            "pass over RAM (the replica runs on its new node from the switch); once switched, "
            "a failure loses the replica's memory.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the drained nodes' records as JSON.")
    ] = False,
) -> None:
    """Cordon these nodes and move their replicas to other nodes (rolling, like an update).

    Without --migrate each replica is replaced: a new one starts elsewhere, and once it runs
    the old one stops (make-before-break; the app's memory is not kept). With --migrate each
    running replica of the deployment's current revision moves to a node that takes part in
    moves (its agent was started with --migration-host): the same instance, with its memory,
    on its new node and host port. A move that fails leaves the replica running here and is
    tried again once; after that, or for a replica that cannot move (not running, an old
    revision), it is replaced as without --migrate.

    Follow it with `ukedge replicas --node NODE` and `ukedge moves`; `ukedge node uncordon`
    ends it (a move under way finishes).

    Examples:

      ukedge node drain edge-1

      ukedge node drain edge-1 --migrate --mode live [--postcopy]
    """
    if mode not in ("snapshot", "live"):
        raise UsageError(f"--mode must be snapshot or live, not {mode!r}")
    if mode != "snapshot" and not migrate:
        raise UsageError("--mode says how replicas move: give --migrate with it")
    if postcopy and not (migrate and mode == "live"):
        raise UsageError("--postcopy is for live moves: give --migrate --mode live with it")
    client = controller()
    drained = [
        client.drain(key, migrate=mode if migrate else None, postcopy=postcopy) for key in nodes
    ]
    if as_json:
        render_nodes(drained, as_json=True)
        return
    for record in drained:
        out.print(record.name)


@app.command()
def rm(nodes: Annotated[list[str], _NODES]) -> None:
    """Forget nodes: their replicas are placed elsewhere, their credential stops working.

    A node that should come back enrols again with a join token. Drain it first to move its
    replicas without a gap.
    """
    client = controller()
    for key in nodes:
        out.print(client.remove_node(key).name)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="node")
