"""``ukedge controller``: run the controller, and make the join tokens nodes enrol with.

``serve`` runs on the controller's machine; the token commands talk to a controller like every
fleet command (``--controller URL``, else ``UKEDGE_CONTROLLER``, else the local one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ukedge.cli._console import err, out, print_json, print_table, when
from ukedge.cli._context import controller
from ukedge.cli._flags import seconds

if TYPE_CHECKING:
    from ukedge.controller import TokenInfo

__all__ = ["app", "register", "render_tokens"]

app = typer.Typer(
    help="Run the controller (the cloud centre of a fleet) and manage its join tokens.",
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="Join tokens: what `ukedge host serve --join-token` enrols nodes with.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@app.command()
def serve(
    addr: Annotated[
        str | None, typer.Option("--addr", help="HOST:PORT to listen on [0.0.0.0:7700].")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL: sqlite:///PATH, or postgresql://USER@HOST/DB for several "
            "controllers sharing one state [a SQLite file in the data directory].",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Certificate, key, admin token and SQLite file [<UKEDGE_HOME>/controller].",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file ([controller] table).")
    ] = None,
    not_ready_after: Annotated[
        str | None,
        typer.Option(
            "--not-ready-after", help="A node without a heartbeat this long is NotReady [15s]."
        ),
    ] = None,
    grace: Annotated[
        str | None,
        typer.Option(
            "--grace",
            help="How long a NotReady node's replicas wait before they are placed elsewhere.",
        ),
    ] = None,
    mqtt: Annotated[
        list[str] | None,
        typer.Option(
            "--mqtt",
            help="Republish every stored result to this MQTT broker (mqtt://HOST:1883), on "
            "the topics agents use; repeatable.",
        ),
    ] = None,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--trusted-key",
            help="Public key (cosign PEM) a deployment with require_signature must be signed "
            "by; repeatable (any one suffices).",
        ),
    ] = None,
    rebalance_above: Annotated[
        float | None,
        typer.Option(
            "--rebalance-above",
            min=0.01,
            max=0.99,
            help="Move replicas (with their memory) off a node whose memory is more than this "
            "share allocated (0.9: 90%), one at a time, to nodes that take part in moves and "
            "stay at or below it [off].",
        ),
    ] = None,
    rebalance_mode: Annotated[
        str | None,
        typer.Option(
            "--rebalance-mode", help="How rebalancing moves a replica: live or snapshot [live]."
        ),
    ] = None,
) -> None:
    """Run the controller: the REST API for the CLI, the nodes' heartbeats, the scheduler.

    HTTPS always: the first start makes a self-signed certificate and an admin token in the
    data directory (`tls.crt`, `admin.token`, mode 0600); the CLI on the same machine finds
    them there, elsewhere set UKEDGE_CONTROLLER, UKEDGE_CONTROLLER_TOKEN and
    UKEDGE_CONTROLLER_CERT (a copy of `tls.crt`). Then `ukedge controller token create` makes
    the join token nodes enrol with.

    Examples: ukedge controller serve;
    ukedge controller serve --addr 0.0.0.0:7700 --db postgresql://ukedge@db/ukedge --grace 30s
    """
    import os

    from ukedge import controller as centre
    from ukedge.controller import CLIENT_ENV

    # The client's variables (UKEDGE_CONTROLLER_TOKEN, _CERT) share the settings' prefix but
    # are no server settings: left out, a shell set up for the CLI can start a controller too.
    environ = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    settings = centre.load_controller_settings(
        config,
        environ=environ,
        addr=addr,
        db=db,
        data_dir=data_dir,
        not_ready_after_s=seconds("--not-ready-after", not_ready_after),
        grace_s=seconds("--grace", grace),
        mqtt=mqtt or None,
        trusted_keys=trusted_key or None,
        rebalance_above=rebalance_above,
        rebalance_mode=rebalance_mode,
    )
    err.print(
        f"controller on https://{settings.addr} (data {settings.data_dir}); the CLI here finds "
        f"its token and certificate there; dashboard at https://{settings.addr}/ (paste "
        "admin.token)",
        markup=False,
    )
    centre.serve(settings)


def render_tokens(tokens: Sequence[TokenInfo], *, as_json: bool) -> None:
    if as_json:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    print_table(
        ["TOKEN ID", "DESCRIPTION", "CREATED", "EXPIRES", "USES LEFT", "NODES"],
        [
            (
                t.id,
                t.description or "-",
                when(t.created_at),
                when(t.expires_at),
                "unlimited" if t.uses_left is None else t.uses_left,
                t.nodes_enrolled,
            )
            for t in tokens
        ],
    )


@token_app.command("create")
def token_create(
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Lifetime, e.g. 24h or 30m [no expiry].")
    ] = None,
    uses: Annotated[
        int | None,
        typer.Option("--uses", min=1, help="How many nodes may enrol with it [unlimited]."),
    ] = None,
    description: Annotated[
        str, typer.Option("--description", help="A note to recognise the token by.")
    ] = "",
) -> None:
    """Make a join token and print it once (the controller keeps only a hash).

    The token pins the controller's certificate, so a node needs nothing else to enrol: one
    token may enrol a whole batch of nodes (within --uses and --ttl).

    Example: ukedge controller token create --ttl 24h --uses 50 --description "site B";
    then on each node: ukedge host serve --controller https://centre:7700 --join-token TOKEN
    """
    client = controller()
    created = client.create_token(description, ttl_s=seconds("--ttl", ttl), uses=uses)
    limits = [
        f"expires {when(created.expires_at)}" if created.expires_at else "no expiry",
        "unlimited uses" if created.uses_left is None else f"{created.uses_left} use(s)",
    ]
    err.print(
        f"join token {created.id} ({', '.join(limits)}; shown once). Enrol a node with:\n"
        f"  ukedge host serve --controller {client.url} --join-token <the token below>",
        markup=False,
    )
    out.print(created.token, markup=False, highlight=False)


@token_app.command("ls")
def token_ls(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the join tokens (never their secrets): expiry, uses left, nodes enrolled."""
    render_tokens(controller().tokens(), as_json=as_json)


@token_app.command("rm")
def token_rm(
    token_ids: Annotated[list[str], typer.Argument(help="Token ids (see `token ls`).")],
) -> None:
    """Revoke join tokens: no more nodes enrol with them (enrolled nodes stay)."""
    client = controller()
    for token_id in token_ids:
        client.delete_token(token_id)
        out.print(token_id)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="controller")
