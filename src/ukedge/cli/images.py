"""Local image commands: ``images``, ``tag``, ``rmi`` and ``image save|load|ls|rm|inspect``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ukedge.cli._console import err, out, print_json, print_table
from ukedge.units import format_size

if TYPE_CHECKING:
    from ukedge.image import ImageStore, StoredImage

__all__ = ["image_app", "register"]

image_app = typer.Typer(
    help="Manage images in the local store (an OCI image layout).", no_args_is_help=True
)


def _store() -> ImageStore:
    from ukedge.image import ImageStore
    from ukedge.paths import store_dir

    return ImageStore(store_dir())


def _created(store: ImageStore, image: StoredImage, created: str | None) -> str:
    if created:
        return created
    mtime = store.blob_path(image.digest).stat().st_mtime
    return dt.datetime.fromtimestamp(mtime, dt.UTC).isoformat(timespec="seconds")


def image_summary(store: ImageStore, image: StoredImage) -> dict[str, Any]:
    from ukedge.image import parse_reference

    _, manifest = store.manifest(image.ref)
    config = store.config(manifest)
    ref = parse_reference(image.ref)
    return {
        "ref": image.ref,
        "repository": ref.name,
        "tag": ref.tag,
        "id": image.id,
        "digest": image.digest,
        "created": _created(store, image, config.created),
        "size": store.image_size(manifest),
        "runtime": config.runtime,
        "layers": [layer.size for layer in manifest.layers],
    }


def list_images(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array instead of a table.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print image ids only.")] = False,
) -> None:
    """List images in the local store (sizes are compressed, as pushed)."""
    store = _store()
    rows = [image_summary(store, image) for image in store.images()]
    if as_json:
        print_json(rows)
    elif quiet:
        for row in rows:
            out.print(row["id"])
    else:
        print_table(
            ["REPOSITORY", "TAG", "IMAGE ID", "RUNTIME", "CREATED", "SIZE"],
            [
                (
                    r["repository"],
                    r["tag"],
                    r["id"],
                    r["runtime"],
                    r["created"],
                    format_size(r["size"]),
                )
                for r in rows
            ],
        )


def inspect_image(
    ref: Annotated[str, typer.Argument(help="Image reference, digest or id prefix.")],
) -> None:
    """Print an image's manifest, config and digest as JSON."""
    store = _store()
    image, manifest = store.manifest(ref)
    print_json(
        {
            "ref": image.ref,
            "digest": image.digest,
            "size": store.image_size(manifest),
            "manifest": manifest.model_dump(mode="json", by_alias=True, exclude_none=True),
            "config": store.config(manifest).model_dump(mode="json", exclude_none=True),
        }
    )


def tag_image(
    source: Annotated[str, typer.Argument(help="Existing image (reference, digest or id).")],
    target: Annotated[str, typer.Argument(help="New reference, e.g. localhost:5000/team/app:1.")],
) -> None:
    """Give an image another name; both names share the same blobs."""
    image = _store().tag(source, target)
    err.print(f"tagged {image.ref} → {image.id}")


def remove_images(
    refs: Annotated[list[str], typer.Argument(help="Images to untag.")],
) -> None:
    """Untag images and delete blobs that no other image uses."""
    store = _store()
    for ref in refs:
        image = store.resolve(ref)
        removed = store.remove(image.ref)
        out.print(f"Untagged: {image.ref}")
        for digest in removed:
            out.print(f"Deleted: {digest}")


def save_images(
    refs: Annotated[list[str], typer.Argument(help="Images to write into the archive.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Archive to write (an OCI image tar).")
    ],
) -> None:
    """Write images to an OCI archive that `ukedge image load`, skopeo or oras can read."""
    _store().save(refs, output)
    err.print(f"saved {len(refs)} image(s) to {output}")


def load_images(
    source: Annotated[
        Path, typer.Option("--input", "-i", help="OCI archive made by `image save`.", exists=True)
    ],
) -> None:
    """Import every tagged image of an OCI archive; each blob is verified first."""
    for ref in _store().load(source):
        out.print(f"Loaded image: {ref}")


image_app.command("ls")(list_images)
image_app.command("inspect")(inspect_image)
image_app.command("tag")(tag_image)
image_app.command("rm")(remove_images)
image_app.command("save")(save_images)
image_app.command("load")(load_images)


def register(app: typer.Typer) -> None:
    """Docker's top-level shortcuts plus the ``image`` group."""
    app.command("images")(list_images)
    app.command("tag")(tag_image)
    app.command("rmi")(remove_images)
    app.add_typer(image_app, name="image")
