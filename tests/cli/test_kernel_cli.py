from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ukedge.cli.main import app
from ukedge.kernel import ensure_kernel


@pytest.mark.kernel
def test_kernel_build_is_instant_when_cached_and_ls_lists_it() -> None:
    kernel = ensure_kernel("minimal")  # built by `make kernel` before the suite runs
    runner = CliRunner()
    built = runner.invoke(app, ["kernel", "build", "--profile", "minimal"])
    assert built.exit_code == 0, built.output
    assert str(kernel.vmlinux) in built.output
    listed = runner.invoke(app, ["kernel", "ls", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    row = next(r for r in rows if r["key"] == kernel.key)
    assert row["profile"] == "minimal" and row["version"] == kernel.version
    assert row["vmlinux_size"] == kernel.vmlinux.stat().st_size
    table = runner.invoke(app, ["kernel", "ls"])
    assert table.exit_code == 0 and kernel.key in table.stdout


def test_unknown_profile_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["kernel", "build", "--profile", "nope"])
    assert result.exit_code != 0
    assert "unknown kernel profile 'nope'" in str(result.exception)
