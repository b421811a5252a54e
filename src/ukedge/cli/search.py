"""``ukedge search``: find repositories on a registry by name, image name or label."""

from __future__ import annotations

import typer

from ukedge.cli._console import err, print_json, print_table

__all__ = ["register", "search_command"]


def search_command(
    term: str = typer.Argument(..., help="Text to find (case-insensitive substring)."),
    registry: str | None = typer.Option(
        None, "--registry", "-r", help="Registry HOST[:PORT]; default: UKEDGE_REGISTRY."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Plain HTTP (default only for localhost/127.0.0.1 registries)."
    ),
    limit: int = typer.Option(
        200, "--limit", min=1, help="Repositories of the catalog to inspect."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """Search the registry's catalog: repository names, and the name and labels of each image."""
    from ukedge.registry import search

    hits = search(term, registry=registry, insecure=True if insecure else None, limit=limit)
    if as_json:
        print_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        err.print(f"nothing matches {term!r}")
        return
    print_table(
        ["REPOSITORY", "TAG", "NAME", "MATCHED"],
        [(h.repository, h.tag or "", h.image_name or "", "; ".join(h.matched)) for h in hits],
    )


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
