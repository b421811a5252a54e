"""``ukedge login`` and ``ukedge logout``: registry credentials."""

from __future__ import annotations

import sys

import typer

from ukedge.cli._console import err
from ukedge.errors import UsageError

__all__ = ["login_command", "logout_command", "register"]


def login_command(
    registry: str = typer.Argument(..., help="Registry host, HOST[:PORT]."),
    username: str | None = typer.Option(
        None, "--username", "-u", help="User name (prompted if absent)."
    ),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password (or robot token) from stdin."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Plain HTTP (default only for localhost/127.0.0.1 registries)."
    ),
) -> None:
    """Check credentials with the registry (its token flow) and save them for push and pull.

    They are stored in <ukedge home>/auth.json (or $UKEDGE_AUTH_FILE) with mode 0600.
    UKEDGE_REGISTRY_USER and UKEDGE_REGISTRY_PASSWORD, when set, override saved credentials.
    """
    from ukedge.registry import CredentialStore, login

    if username is None:
        if not sys.stdin.isatty() or password_stdin:
            raise UsageError("give the user name with -u USER")
        username = typer.prompt("Username")
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True)
    else:
        raise UsageError("no terminal to ask for the password: use --password-stdin")
    if not password:
        raise UsageError("empty password")
    store = CredentialStore()
    verified = login(registry, username, password, insecure=True if insecure else None, store=store)
    if verified:
        err.print(f"Login succeeded; credentials saved in {store.path}")
    else:
        err.print(f"{registry} asks for no credentials; saved them anyway in {store.path}")


def logout_command(registry: str = typer.Argument(..., help="Registry host, HOST[:PORT].")) -> None:
    """Forget the saved credentials of a registry."""
    from ukedge.registry import logout

    if logout(registry):
        err.print(f"Removed the credentials of {registry}")
    else:
        err.print(f"No credentials were saved for {registry}")


def register(app: typer.Typer) -> None:
    app.command("login")(login_command)
    app.command("logout")(logout_command)
