"""``ukedge bench compare``: runs the comparison harness of the source tree (``bench/compare``).

The harness is not part of the installed package (it drives runc, podman and debootstrap, and
measures; nothing in ukedge depends on it), so the command finds it beside the package in a
source checkout and runs it as ``python -m compare`` with its arguments passed through.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

import ukedge
from ukedge.errors import UsageError

__all__ = ["app", "register"]

app = typer.Typer(
    help="Measure ukedge against other ways of running the same app.", no_args_is_help=True
)


def harness_dir() -> Path:
    """``bench/`` of the source checkout this package runs from."""
    bench = Path(ukedge.__file__).resolve().parents[2] / "bench"
    if not (bench / "compare" / "__main__.py").is_file():
        raise UsageError(
            f"the benchmark harness is not at {bench}/compare: it ships with the source tree; "
            "run `ukedge bench` from a checkout installed with `pip install -e .`"
        )
    return bench


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def compare(ctx: typer.Context) -> None:
    """The same app as unikernel, container, full VM and host process, side by side.

    Options (passed to the harness; `--help` lists them): `--app DIR` (default
    examples/sensor-agg), `--runs N`, `--out DIR`, `--short` (process, unikernel and runc only).
    """
    bench = harness_dir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(bench), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    code = subprocess.run([sys.executable, "-m", "compare", *ctx.args], env=env).returncode
    raise typer.Exit(code)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="bench")
