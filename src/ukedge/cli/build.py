"""``ukedge build DIR -t NAME:TAG``: turn a directory with a Ukfile into a local image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ukedge.build import BuildResult, Stage, build_image
from ukedge.cli._console import err, out, print_json, stderr
from ukedge.image import ImageStore, parse_platform
from ukedge.paths import store_dir
from ukedge.units import format_size

__all__ = ["build", "register"]

_LABELS: dict[Stage, str] = {
    "kernel": "kernel layer",
    "runtime": "runtime layer",
    "app": "app layer",
    "write": "write to store",
}


def _summary(result: BuildResult) -> dict[str, object]:
    return {
        "id": result.id,
        "digest": result.digest,
        "tags": result.tags,
        "size": result.size,
        "config": result.config.model_dump(mode="json", exclude_none=True),
        "layers": [
            {
                "role": layer.role,
                "mediaType": layer.media_type,
                "digest": layer.digest,
                "size": layer.size,
                "uncompressedSize": layer.uncompressed_size,
                "cached": layer.cached,
            }
            for layer in result.layers
        ],
    }


def build(
    context: Annotated[
        Path, typer.Argument(help="Directory holding the Ukfile (or the Ukfile itself).")
    ],
    tags: Annotated[
        list[str] | None,
        typer.Option(
            "--tag", "-t", help="Name and tag, e.g. sensor-agg:1 (repeatable; default name:latest)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    platform: Annotated[
        str | None,
        typer.Option(
            "--platform",
            help="Target platform, e.g. linux/arm64 (default: this machine's); another "
            "architecture is cross-built and runs here emulated.",
        ),
    ] = None,
) -> None:
    """Build an image from DIR/Ukfile into the local store (same inputs give the same digest)."""
    target = parse_platform(platform) if platform else None
    started = time.monotonic()
    store = ImageStore(store_dir())
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
        disable=as_json,
    ) as bar:
        tasks = {
            stage: bar.add_task(label, total=None, start=False, detail="", visible=False)
            for stage, label in _LABELS.items()
        }

        def progress(stage: Stage, event: Literal["start", "cached", "done"], detail: str) -> None:
            task = tasks[stage]
            if event == "start":
                bar.start_task(task)
                bar.update(task, visible=True, detail=detail)
                return
            if stage == "write":
                detail = f"id {detail.removeprefix('sha256:')[:12]}"
            bar.update(task, total=1, completed=1, detail=detail)
            if not as_json:
                note = {"cached": "cached", "done": "written" if stage == "write" else "built"}
                err.print(f" [green]✔[/] {_LABELS[stage]:<15} {note[event]:<8} {detail}")

        def kernel_progress(done: int, total: int | None) -> None:
            bar.update(tasks["kernel"], completed=done, total=total, detail="building the kernel")

        result = build_image(
            context,
            tags or [],
            store=store,
            progress=progress,
            kernel_progress=kernel_progress,
            platform=target,
        )
    if as_json:
        print_json(_summary(result))
        return
    took = time.monotonic() - started
    for layer in result.layers:
        err.print(
            f"   {layer.role:<8} {layer.digest[7:19]}  {format_size(layer.size):>9} "
            f"({format_size(layer.uncompressed_size)} unpacked)"
        )
    err.print(
        f"   total    {format_size(result.size)} compressed, built in {took:.1f}s "
        f"for {result.config.platform}"
    )
    out.print(f"Successfully built {result.id}")
    for tag in result.tags:
        out.print(f"Successfully tagged {tag}")
    out.print(result.digest)


def register(app: typer.Typer) -> None:
    app.command("build")(build)
