"""``ukedge tags``: the tags of a repository on a registry."""

from __future__ import annotations

import typer

from ukedge.cli._console import out, print_json

__all__ = ["register", "tags_command"]


def tags_command(
    repository: str = typer.Argument(
        ..., help="HOST[:PORT]/NAME (NAME alone uses UKEDGE_REGISTRY)."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Plain HTTP (default only for localhost/127.0.0.1 registries)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List the tags of a repository, one per line."""
    from ukedge.registry import list_tags

    tags = list_tags(repository, insecure=True if insecure else None)
    if as_json:
        print_json(tags)
        return
    for tag in tags:
        out.print(tag)


def register(app: typer.Typer) -> None:
    app.command("tags")(tags_command)
