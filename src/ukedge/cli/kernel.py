"""Kernel commands: ``kernel build`` and ``kernel ls``."""

from __future__ import annotations

import time

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from ukedge.cli._console import err, out, print_json, print_table, stderr
from ukedge.image import parse_platform
from ukedge.kernel import Kernel, ensure_kernel, list_kernels
from ukedge.units import format_size

__all__ = ["app", "register"]

app = typer.Typer(help="Build and list kernel profiles.", no_args_is_help=True)


def _row(kernel: Kernel) -> dict[str, object]:
    return {
        "profile": kernel.profile,
        "architecture": kernel.architecture,
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
    platform: str | None = typer.Option(
        None,
        "--platform",
        "--arch",
        help="Target platform or architecture (linux/arm64, arm64); default: this machine's. "
        "Another architecture is cross-compiled with Debian's gcc-<arch>-linux-gnu.",
    ),
) -> None:
    """Build a kernel profile from Debian's linux-source (cached: instant the second time)."""
    target = parse_platform(platform) if platform else None
    started = time.monotonic()
    label = f"kernel {profile}" + (f" {target.architecture}" if target else "")
    with Progress(
        TextColumn(label),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
    ) as bar:
        task = bar.add_task("build", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        kernel = ensure_kernel(profile, progress=progress, force=force, platform=target)
    took = time.monotonic() - started
    size = format_size(kernel.boot_image.stat().st_size)
    err.print(
        f"kernel {kernel.profile} {kernel.architecture} {kernel.version} "
        f"({size} {kernel.boot_image.name}) ready in {took:.1f}s"
    )
    out.print(str(kernel.boot_image))


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
        ["PROFILE", "ARCH", "VERSION", "KEY", "VMLINUX", "BZIMAGE", "PATH"],
        [
            (
                r["profile"],
                r["architecture"],
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
