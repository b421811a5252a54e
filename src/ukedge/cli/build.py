"""``ukedge build DIR -t NAME:TAG``: turn a directory with a Ukfile into a local image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ukedge.build import BuildProgress, BuildResult, IndexResult, Stage, build_image, build_index
from ukedge.cli._console import err, out, print_json, stderr
from ukedge.image import ImageStore, Platform, parse_platforms
from ukedge.paths import store_dir
from ukedge.types import ProgressCallback
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
            help="Target platform(s), e.g. linux/arm64 or linux/amd64,linux/arm64 (default: "
            "this machine's). Several make a multi-platform image (an OCI index); another "
            "architecture is cross-built and runs here emulated.",
        ),
    ] = None,
) -> None:
    """Build an image from DIR/Ukfile into the local store (same inputs give the same digest)."""
    targets = parse_platforms(platform) if platform else []
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
        several = len(targets) > 1
        kernel_tasks: dict[str, TaskID] = {}

        def progress_for(target: Platform | None) -> BuildProgress:
            """One set of stage lines per platform (prefixed with it when there are several)."""
            prefix = f"{target} " if several and target is not None else ""
            tasks = {
                stage: bar.add_task(
                    prefix + label, total=None, start=False, detail="", visible=False
                )
                for stage, label in _LABELS.items()
            }
            kernel_tasks[str(target)] = tasks["kernel"]

            def progress(
                stage: Stage, event: Literal["start", "cached", "done"], detail: str
            ) -> None:
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
                    err.print(
                        f" [green]✔[/] {prefix}{_LABELS[stage]:<15} {note[event]:<8} {detail}"
                    )

            return progress

        def kernel_progress_for(target: Platform | None) -> ProgressCallback:
            def kernel_progress(done: int, total: int | None) -> None:
                bar.update(
                    kernel_tasks[str(target)],
                    completed=done,
                    total=total,
                    detail="building the kernel",
                )

            return kernel_progress

        if several:
            index = build_index(
                context,
                tags or [],
                store=store,
                platforms=targets,
                progress=progress_for,
                kernel_progress=kernel_progress_for,
            )
        else:
            one = targets[0] if targets else None
            result = build_image(
                context,
                tags or [],
                store=store,
                progress=progress_for(one),
                kernel_progress=kernel_progress_for(one),
                platform=one,
            )
    took = time.monotonic() - started
    if several:
        _report_index(index, took, as_json=as_json)
        return
    if as_json:
        print_json(_summary(result))
        return
    _report_layers(result)
    err.print(
        f"   total    {format_size(result.size)} compressed, built in {took:.1f}s "
        f"for {result.config.platform}"
    )
    out.print(f"Successfully built {result.id}")
    for tag in result.tags:
        out.print(f"Successfully tagged {tag}")
    out.print(result.digest)


def _report_layers(result: BuildResult, prefix: str = "") -> None:
    for layer in result.layers:
        err.print(
            f"   {prefix}{layer.role:<8} {layer.digest[7:19]}  {format_size(layer.size):>9} "
            f"({format_size(layer.uncompressed_size)} unpacked)"
        )


def _report_index(index: IndexResult, took: float, *, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "id": index.id,
                "digest": index.digest,
                "mediaType": index.index.media_type,
                "tags": index.tags,
                "size": index.size,
                "platforms": [
                    {"platform": str(b.config.platform), **_summary(b)} for b in index.builds
                ],
            }
        )
        return
    for build in index.builds:
        err.print(f"   {build.config.platform}: manifest {build.id}")
        _report_layers(build, "  ")
    platforms = ", ".join(str(b.config.platform) for b in index.builds)
    err.print(
        f"   total    {format_size(index.size)} compressed, built in {took:.1f}s for {platforms}"
    )
    out.print(f"Successfully built {index.id} (an index of {len(index.builds)} platforms)")
    for tag in index.tags:
        out.print(f"Successfully tagged {tag}")
    out.print(index.digest)


def register(app: typer.Typer) -> None:
    app.command("build")(build)
