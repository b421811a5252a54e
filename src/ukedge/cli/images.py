"""Local image commands: ``images``, ``tag``, ``rmi`` and ``image save|load|ls|rm|inspect|prune``.

Listing, inspecting, removing and pruning go through the node's image cache (``ukedge.host``),
which knows which images instances use and keeps the budget; the ``render_*`` functions only
draw what it returns, so a remote node's answers render the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ukedge.cli._console import err, out, print_image_record, print_json, print_table, when
from ukedge.cli._context import local_only, node
from ukedge.cli.instances import prewarm
from ukedge.units import format_size

if TYPE_CHECKING:
    from ukedge.host import ImageSummary, PruneReport
    from ukedge.image import ImageStore

__all__ = [
    "image_app",
    "register",
    "render_images",
    "render_prune",
    "render_removal",
]

image_app = typer.Typer(
    help="Manage images in the local store (an OCI image layout).", no_args_is_help=True
)


def _store() -> ImageStore:
    from ukedge.image import ImageStore
    from ukedge.paths import store_dir

    return ImageStore(store_dir())


def render_images(rows: Sequence[ImageSummary], *, as_json: bool, quiet: bool) -> None:
    if as_json:
        print_json([row.model_dump(mode="json") for row in rows])
    elif quiet:
        for row in rows:
            out.print(row.id)
    else:
        print_table(
            [
                "REPOSITORY",
                "TAG",
                "IMAGE ID",
                "PLATFORMS",
                "RUNTIME",
                "CREATED",
                "LAST USED",
                "SIZE",
            ],
            [
                (
                    r.repository,
                    r.tag,
                    r.id,
                    ",".join(p.removeprefix("linux/") for p in r.platforms),
                    r.runtime,
                    r.created,
                    when(r.last_used) + (" (in use)" if r.in_use else ""),
                    format_size(r.size),
                )
                for r in rows
            ],
        )


def render_removal(lines: Sequence[str]) -> None:
    for line in lines:
        out.print(line)


def render_prune(report: PruneReport, *, as_json: bool) -> None:
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    for ref in report.removed:
        out.print(f"Untagged: {ref}")
    out.print(f"Total reclaimed space: {format_size(report.reclaimed_bytes)}")


def list_images(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array instead of a table.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print image ids only.")] = False,
) -> None:
    """List the node's images (sizes are compressed, as pushed)."""
    render_images(node().images(), as_json=as_json, quiet=quiet)


def inspect_image(
    ref: Annotated[str, typer.Argument(help="Image reference, digest or id prefix.")],
    platform: Annotated[
        str | None,
        typer.Option("--platform", help="Of a multi-platform image, this platform [the node's]."),
    ] = None,
) -> None:
    """Print an image's manifest, config and digest as JSON (of a multi-platform image: one
    platform's, with the index's digest and its platforms)."""
    print_image_record(node().inspect_image(ref, platform), ref)


def tag_image(
    source: Annotated[str, typer.Argument(help="Existing image (reference, digest or id).")],
    target: Annotated[str, typer.Argument(help="New reference, e.g. localhost:5000/team/app:1.")],
) -> None:
    """Give an image another name; both names share the same blobs."""
    local_only("image tag")
    image = _store().tag(source, target)
    err.print(f"tagged {image.ref} → {image.id}")


def remove_images(
    refs: Annotated[list[str], typer.Argument(help="Images to untag.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", "-f", help="Remove even images instances use, or every name of an id."
        ),
    ] = False,
) -> None:
    """Untag images and delete blobs that no other image uses.

    An image an instance uses (in any state) is refused without --force.
    """
    target = node()
    for ref in refs:
        render_removal(target.remove_image(ref, force=force))


def prune_images(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Remove every image no instance uses, and the blobs only they needed.

    Prints each name removed and the bytes reclaimed.
    """
    render_prune(node().prune_images(), as_json=as_json)


def save_images(
    refs: Annotated[list[str], typer.Argument(help="Images to write into the archive.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Archive to write (an OCI image tar).")
    ],
) -> None:
    """Write images to an OCI archive that `ukedge image load`, skopeo or oras can read."""
    local_only("image save")
    _store().save(refs, output)
    err.print(f"saved {len(refs)} image(s) to {output}")


def load_images(
    source: Annotated[
        Path, typer.Option("--input", "-i", help="OCI archive made by `image save`.", exists=True)
    ],
) -> None:
    """Import every tagged image of an OCI archive; each blob is verified first."""
    local_only("image load")
    for ref in _store().load(source):
        out.print(f"Loaded image: {ref}")


image_app.command("ls")(list_images)
image_app.command("inspect")(inspect_image)
image_app.command("tag")(tag_image)
image_app.command("rm")(remove_images)
image_app.command("prune")(prune_images)
image_app.command("save")(save_images)
image_app.command("load")(load_images)
image_app.command("prewarm")(prewarm)  # an instance command (it boots one), listed with images


def register(app: typer.Typer) -> None:
    """Docker's top-level shortcuts plus the ``image`` group."""
    app.command("images")(list_images)
    app.command("tag")(tag_image)
    app.command("rmi")(remove_images)
    app.add_typer(image_app, name="image")
