"""Kernel commands: ``kernel build`` and ``kernel ls``."""

from __future__ import annotations

import time

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from ukedge.cli._console import err, out, print_json, print_table, stderr
from ukedge.kernel import Kernel, ensure_kernel, list_kernels
from ukedge.units import format_size

__all__ = ["app", "register"]

app = typer.Typer(help="Build and list kernel profiles.", no_args_is_help=True)


def _row(kernel: Kernel) -> dict[str, object]:
    return {
        "profile": kernel.profile,
        "version": kernel.version,
        "key": kernel.key,
        "vmlinux": str(kernel.vmlinux),
        "vmlinux_size": kernel.vmlinux.stat().st_size,
        "bzimage": str(kernel.bzimage),
        "bzimage_size": kernel.bzimage.stat().st_size,
        "cmdline": kernel.cmdline,
    }


@app.command("build")
def build(
    profile: str = typer.Option("minimal", "--profile", "-p", help="Kernel profile to build."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the cache has it."),
) -> None:
    """Build a kernel profile from Debian's linux-source (cached: instant the second time)."""
    started = time.monotonic()
    with Progress(
        TextColumn(f"kernel {profile}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
    ) as bar:
        task = bar.add_task("build", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        kernel = ensure_kernel(profile, progress=progress, force=force)
    took = time.monotonic() - started
    size = format_size(kernel.vmlinux.stat().st_size)
    err.print(f"kernel {kernel.profile} {kernel.version} ({size} vmlinux) ready in {took:.1f}s")
    out.print(str(kernel.vmlinux))


@app.command("ls")
def ls(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array instead of a table."),
) -> None:
    """List the kernels built on this machine."""
    rows = [_row(k) for k in list_kernels()]
    if as_json:
        print_json(rows)
        return
    print_table(
        ["PROFILE", "VERSION", "KEY", "VMLINUX", "BZIMAGE", "PATH"],
        [
            (
                r["profile"],
                r["version"],
                r["key"],
                format_size(int(str(r["vmlinux_size"]))),
                format_size(int(str(r["bzimage_size"]))),
                r["vmlinux"],
            )
            for r in rows
        ],
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="kernel")
