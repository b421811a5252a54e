"""``ukedge host serve`` runs the host agent; ``ukedge info`` describes a node.

Agent settings come from flags, then ``UKEDGE_AGENT_*`` environment variables, then
``--config FILE`` (TOML, an ``[agent]`` table), then defaults; see
:class:`ukedge.host.AgentSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ukedge.cli._console import err, print_json, print_table
from ukedge.cli._context import node
from ukedge.errors import UsageError
from ukedge.units import format_size

__all__ = ["app", "info", "register"]

app = typer.Typer(help="Run the host agent of an edge node.", no_args_is_help=True)


def _labels(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    labels: dict[str, str] = {}
    for item in ",".join(items).split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise UsageError(f"invalid label {item!r}: expected KEY=VALUE (comma-separated)")
        labels[key] = value
    return labels


@app.command()
def serve(
    addr: Annotated[
        str | None,
        typer.Option("--addr", help="HOST:PORT of the REST API (token required) [127.0.0.1:7600]."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data directory (default: <UKEDGE_HOME>/agent)."),
    ] = None,
    socket: Annotated[
        Path | None,
        typer.Option("--socket", help="Unix socket of the API, no token [`<data>/agent.sock`]."),
    ] = None,
    hub: Annotated[
        str | None,
        typer.Option("--hub", help="Registry HOST:PORT for image names that give none."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Node name [this machine's hostname].")
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option("--labels", help="Node labels k=v,k2=v2 (the scheduler matches them)."),
    ] = None,
    mqtt: Annotated[
        list[str] | None,
        typer.Option("--mqtt", help="Forward results to mqtt://HOST:PORT (QoS 1). Repeatable."),
    ] = None,
    controller: Annotated[
        str | None,
        typer.Option(
            "--controller", help="Controller to enrol with (https://HOST:7700); kept once enrolled."
        ),
    ] = None,
    join_token: Annotated[
        str | None,
        typer.Option(
            "--join-token", help="Join token for the first start (controller token create)."
        ),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", help="Guest memory instances may commit [host memory - reserve]."),
    ] = None,
    cpus: Annotated[
        int | None, typer.Option("--cpus", help="vCPUs instances may commit [4 × host CPUs].")
    ] = None,
    overcommit: Annotated[
        float | None,
        typer.Option("--overcommit", help="Admission allows memory and vCPUs × this [1.0]."),
    ] = None,
    image_budget: Annotated[
        str | None,
        typer.Option("--image-budget", help="Image cache size; LRU unused images go first."),
    ] = None,
    qemu_user: Annotated[
        str | None,
        typer.Option("--qemu-user", help="User QEMU drops to when the agent is root [nobody]."),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Signature policy (TOML): keys that must sign images."),
    ] = None,
    migration_host: Annotated[
        str | None,
        typer.Option(
            "--migration-host",
            help="Address other nodes reach this one's migration listener at (it listens on "
            "--addr's host); set, the node takes part in its controller's moves (node drain "
            "--migrate) [none: no part].",
        ),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(
            "--platform",
            help="Platform this node runs, e.g. linux/arm64 [this host's]; another architecture "
            "is emulated (TCG).",
        ),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="json or text [json].")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file ([agent] table).")
    ] = None,
) -> None:
    """Run the host agent: a REST API over this node's images and instances.

    On first start it makes a bearer token (kept in `<data>/token`, mode 0600) and prints it once;
    clients on other machines pass it with --token or UKEDGE_HOST_TOKEN. The Unix socket needs
    no token. Instances keep running when the agent stops; a restarted agent re-adopts them.

    With --controller and --join-token the node enrols with a controller (once; the enrolment
    is kept in `<data>/controller.json`), reports to it by heartbeat and runs the instances it
    is given, also while the controller is unreachable. With --migration-host it also takes
    part in the moves the controller drives (`ukedge node drain NODE --migrate`): other nodes
    reach its migration listener (TLS, on --addr's host) at that address.

    Example: ukedge host serve --addr 0.0.0.0:7600 --hub hub.local:5000 --mqtt mqtt://broker:1883
    """
    from ukedge import host

    settings = host.load_agent_settings(
        config,
        addr=addr,
        data_dir=data,
        socket=socket,
        hub=hub,
        name=name,
        labels=_labels(labels),
        mqtt=mqtt or None,
        controller=controller,
        join_token=join_token,
        memory=memory,
        cpus=cpus,
        overcommit=overcommit,
        image_budget=image_budget,
        qemu_user=qemu_user,
        policy=policy,
        migration_host=migration_host,
        platform=platform,
        log_format=log_format,
    )
    token, made = host.ensure_token(settings.token_path)
    if made:
        err.print(
            f"agent token (shown once; kept in {settings.token_path}):\n{token}", markup=False
        )
    where = f"http://{settings.addr} and " if settings.addr else ""
    err.print(f"serving on {where}unix://{settings.socket_path}", markup=False)
    host.serve(settings, token)


def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe the node: CPUs, memory allocatable and committed, accelerator, image cache."""
    facts = node().info()
    if as_json:
        print_json(facts.model_dump(mode="json"))
        return
    budget = format_size(facts.image_budget_bytes) if facts.image_budget_bytes else "none"
    labels = ",".join(f"{k}={v}" for k, v in sorted(facts.labels.items())) or "-"
    print_table(
        ["", ""],
        [
            ("Name", facts.name),
            ("Labels", labels),
            ("Version", facts.version),
            ("Architecture", facts.architecture),
            ("CPUs", f"{facts.cpus} ({facts.vcpus_committed} vCPUs committed)"),
            ("Memory", format_size(facts.memory_total_bytes)),
            (
                "Allocatable",
                f"{format_size(facts.memory_allocatable_bytes)} × {facts.overcommit_ratio:g} "
                f"({format_size(facts.memory_committed_bytes)} committed)",
            ),
            ("Accelerator", f"{facts.accelerator} ({facts.accelerator_detail})"),
            ("QEMU", facts.qemu_version),
            ("Images", f"{facts.images}, {format_size(facts.image_bytes)} (budget {budget})"),
            ("Instances", f"{facts.instances} ({facts.instances_running} running)"),
        ],
        header=False,
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="host")
    root.command("info")(info)
