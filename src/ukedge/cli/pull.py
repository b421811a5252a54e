"""``ukedge pull``: fetch an image from a registry into the local store (the node's image
cache, so the cache budget applies)."""

from __future__ import annotations

import typer

from ukedge.cli._console import err, out, print_json
from ukedge.cli._context import node, remote_host
from ukedge.errors import UsageError

__all__ = ["pull_image", "register"]


def pull_image(
    image: str = typer.Argument(
        ...,
        help="HOST[:PORT]/NAME[:TAG|@DIGEST]; NAME:TAG alone uses UKEDGE_REGISTRY as the host.",
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Plain HTTP (default only for localhost/127.0.0.1 registries)."
    ),
    platform: str | None = typer.Option(
        None,
        "--platform",
        help="OS/ARCH[/VARIANT] to take from a multi-platform image (default: this host's).",
    ),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Blobs transferred at once."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Pull an image: only the blobs the node lacks, each verified against its digest.

    With --host the agent pulls (a NAME:TAG alone from its --hub); --insecure, --platform and
    --jobs then follow the agent's settings.

    The image is tagged in the local store under its full reference (HOST/NAME:TAG). Prints the
    manifest digest. With UKEDGE_IMAGE_BUDGET set (e.g. 2G), least recently used images no
    instance uses are then removed until the store fits.
    """
    from ukedge.cli._transfer import RichTransferProgress
    from ukedge.host import open_image_cache
    from ukedge.image import parse_platform
    from ukedge.registry import ClientOptions

    progress = RichTransferProgress(enabled=not quiet and not as_json)
    with progress:
        if remote_host():
            # The agent pulls with its own settings (its hub, its registry credentials).
            given = [
                flag
                for flag, used in (
                    ("--insecure", insecure),
                    ("--platform", platform is not None),
                    ("--jobs", jobs != 4),
                )
                if used
            ]
            if given:
                raise UsageError(
                    f"{', '.join(given)} cannot be used with --host: the agent pulls with its "
                    "own settings"
                )
            pulled = node().pull(image, progress=progress)
        else:
            options = ClientOptions(insecure=True if insecure else None, max_workers=jobs)
            pulled = open_image_cache().pull(
                image,
                progress=progress,
                options=options,
                platform=parse_platform(platform) if platform else None,
            )
    if as_json:
        print_json(
            {"ref": pulled.ref, "id": pulled.id, "digest": pulled.digest, "blobs": progress.blobs}
        )
        return
    if not quiet:
        err.print(f"pulled {pulled.ref}: {progress.summary()}")
    out.print(pulled.digest)


def register(app: typer.Typer) -> None:
    app.command("pull")(pull_image)
