"""``ukedge push``: send a local image to a registry."""

from __future__ import annotations

import typer

from ukedge.cli._console import err, out, print_json
from ukedge.units import parse_size

__all__ = ["push_image", "register"]


def push_image(
    image: str = typer.Argument(
        ..., help="Local image: HOST[:PORT]/NAME:TAG, NAME:TAG, digest or id."
    ),
    target: str | None = typer.Argument(
        None,
        help="Where to push, HOST[:PORT]/NAME:TAG. Default: IMAGE itself, which then must name a "
        "registry host, or UKEDGE_REGISTRY/IMAGE when UKEDGE_REGISTRY is set.",
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Plain HTTP (default only for localhost/127.0.0.1 registries)."
    ),
    chunk_size: str = typer.Option(
        "8M", "--chunk-size", help="Blobs larger than this go in resumable chunks of this size."
    ),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Blobs transferred at once."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Push an image: only the blobs the registry lacks; shared layers are mounted.

    An interrupted push resumes its chunked uploads where the registry stopped when run again.
    Credentials come from `ukedge login HOST` (or UKEDGE_REGISTRY_USER/_PASSWORD). Prints the
    manifest digest.
    """
    from ukedge.cli._transfer import RichTransferProgress
    from ukedge.image import ImageStore
    from ukedge.paths import store_dir
    from ukedge.registry import ClientOptions, push, push_target

    options = ClientOptions(
        insecure=True if insecure else None, chunk_size=parse_size(chunk_size), max_workers=jobs
    )
    store = ImageStore(store_dir())
    destination = str(push_target(store, image, target))
    progress = RichTransferProgress(enabled=not quiet and not as_json)
    with progress:
        digest = push(store, image, destination, progress=progress, options=options)
    if as_json:
        print_json(
            {"image": image, "target": destination, "digest": digest, "blobs": progress.blobs}
        )
        return
    if not quiet:
        err.print(f"pushed {destination}: {progress.summary()}")
    out.print(digest)


def register(app: typer.Typer) -> None:
    app.command("push")(push_image)
