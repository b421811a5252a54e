"""``ukedge hub``: run the registry, manage its users and robot tokens, collect garbage, fsck.

Settings come from flags, then ``UKEDGE_HUB_*`` environment variables, then ``--config FILE``
(TOML), then defaults; see :class:`ukedge.hub.HubSettings`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ukedge.cli._console import err, out, print_json, print_table
from ukedge.errors import UsageError
from ukedge.units import format_size

if TYPE_CHECKING:
    from ukedge import hub

__all__ = ["app", "register"]

app = typer.Typer(help="Run and administer the ukedge hub (an OCI registry).", no_args_is_help=True)

_DATA = typer.Option(None, "--data", help="Data directory (default: <UKEDGE_HOME>/hub).")
_CONFIG = typer.Option(None, "--config", help="TOML settings file (keys of HubSettings).")
_ANON = typer.Option(
    None, "--anonymous-pull", help="Glob of repositories anyone may pull, e.g. 'public/*'."
)
_PROXIES = typer.Option(
    None,
    "--trusted-proxy",
    help="Address or network of a reverse proxy whose X-Forwarded-For is believed; "
    "repeat for several [none].",
)
_USER_SCOPE = typer.Option(
    None, "--scope", help="Grant, e.g. repository:team/*:pull,push [all repositories]."
)
_ROBOT_SCOPE = typer.Option(
    ..., "--scope", help="repository:NAME:ACTIONS; repeat for several (NAME may glob)."
)


def _settings(config: Path | None, **values: Any) -> hub.HubSettings:
    from ukedge import hub  # FastAPI and uvicorn load only when a hub command runs

    return hub.load_settings(config, **values)


@app.command()
def serve(
    addr: str = typer.Option(None, "--addr", help="HOST:PORT to listen on [127.0.0.1:5000]."),
    data: Path = _DATA,
    config: Path = _CONFIG,
    auth: str = typer.Option(
        None, "--auth", help="auto (on once a user or token exists), on or off [auto]."
    ),
    anonymous_pull: list[str] = _ANON,
    gc_interval: float = typer.Option(
        None, "--gc-interval", help="Seconds between online GC passes; 0 turns it off [0]."
    ),
    gc_grace: float = typer.Option(
        None, "--gc-grace", help="Never sweep blobs touched more recently (seconds) [1800]."
    ),
    realm: str = typer.Option(None, "--realm", help="Public token URL, if behind a proxy."),
    trusted_proxy: list[str] = _PROXIES,
    body_timeout: float = typer.Option(
        None, "--body-timeout", help="Seconds a request body may stall before a 408 [60]."
    ),
    log_format: str = typer.Option(None, "--log-format", help="json or text [json]."),
) -> None:
    """Serve the OCI distribution API, the token endpoint, the web page and /metrics."""
    settings = _settings(
        config,
        addr=addr,
        data_dir=data,
        auth=auth,
        anonymous_pull=anonymous_pull or None,
        gc_interval=gc_interval,
        gc_grace=gc_grace,
        realm=realm,
        trusted_proxies=trusted_proxy or None,
        body_timeout=body_timeout,
        log_format=log_format,
    )
    err.print(
        f"hub on http://{settings.addr} (data {settings.data_dir}, auth {settings.auth})",
        highlight=False,
    )
    from ukedge import hub

    hub.serve(settings)


user_app = typer.Typer(help="Hub users (HTTP Basic at the token endpoint).", no_args_is_help=True)
token_app = typer.Typer(help="Robot tokens for CI and edge nodes.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="User name."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password."),
    scope: list[str] = _USER_SCOPE,
    data: Path = _DATA,
    config: Path = _CONFIG,
) -> None:
    """Add a user; turns auth on for a hub in the default ``--auth auto`` mode."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise UsageError("empty password")
    from ukedge import hub

    hub.add_user(_settings(config, data_dir=data), name, password, scope or None)
    err.print(f"user {name} added")


@token_app.command("create")
def token_create(
    name: str = typer.Option(..., "--name", help="A name to recognise the token by."),
    scope: list[str] = _ROBOT_SCOPE,
    expires: float = typer.Option(None, "--expires", help="Lifetime in seconds [never]."),
    data: Path = _DATA,
    config: Path = _CONFIG,
) -> None:
    """Create a robot token and print it once; use it as the password of any user name."""
    from ukedge import hub

    robot = hub.create_robot_token(_settings(config, data_dir=data), name, scope, expires)
    err.print(f"robot token {robot.name}: {', '.join(robot.grants)} (shown once)")
    out.print(robot.token, markup=False, highlight=False)


@app.command()
def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Report only; delete nothing."),
    grace: float = typer.Option(None, "--grace", help="Seconds; overrides gc_grace."),
    data: Path = _DATA,
    config: Path = _CONFIG,
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Sweep blobs no manifest references and expire old uploads, while the hub keeps serving."""
    from ukedge import hub

    report = hub.run_gc(_settings(config, data_dir=data, gc_grace=grace), dry_run=dry_run)
    if json_out:
        print_json(report.as_json())
        return
    verb = "would remove" if dry_run else "removed"
    print_table(
        ["what", "count", "bytes"],
        [
            ["blobs", len(report.blobs), format_size(report.bytes_freed)],
            ["uploads", len(report.uploads), "-"],
        ],
    )
    err.print(f"gc {verb} {len(report.blobs)} blob(s) in {report.seconds:.2f}s")


@app.command()
def fsck(
    repair: bool = typer.Option(
        False, "--repair", help="Drop blobs whose content is missing or corrupt (pushes redo them)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Check sizes only; do not hash content."),
    data: Path = _DATA,
    config: Path = _CONFIG,
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check that every blob the hub lists is in storage and intact, and every manifest whole.

    Safe while the hub serves. Exits 1 while a problem remains (after --repair: one repair cannot
    fix, such as a manifest whose blob is lost; the message says what to push again).
    """
    from ukedge import hub

    report = hub.run_fsck(_settings(config, data_dir=data), repair=repair, verify=not quick)
    if json_out:
        print_json(report.as_json())
    else:
        if report.problems:
            print_table(
                ["problem", "digest", "repository", "repaired", "what to do"],
                [
                    [p.kind, p.digest, p.repository or "-", _yes(p.repaired), p.message]
                    for p in report.problems
                ],
            )
        err.print(
            f"fsck checked {report.blobs_checked} blob(s)"
            f"{' (content hashed)' if report.verified else ' (sizes only)'} and "
            f"{report.manifests_checked} manifest(s): {len(report.problems)} problem(s), "
            f"{len(report.unrepaired)} remaining; {report.strays} stray file(s) for GC",
            highlight=False,
        )
    if not report.ok:
        raise typer.Exit(1)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hub")
