"""``ukedge bench compare --short`` end to end: the process, the unikernel (cold and resumed)
and, where runc is installed, the container form are really started and measured; the report,
plots and raw JSON are written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.vm
@pytest.mark.timeout(900)
def test_short_comparison_measures_process_unikernel_and_runc(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ukedge.cli.main",
            "bench",
            "compare",
            "--short",
            "--runs",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    forms = {f["key"]: f for f in data["forms"]}
    assert data["accelerator"] in ("kvm", "tcg")
    measured = ["process", "unikernel-cold", "unikernel-resumed"]
    if shutil.which("runc"):
        measured.append("container-runc")
    else:
        assert "not installed" in forms["container-runc"]["error"]
    for key in measured:
        form = forms[key]
        assert "error" not in form, form.get("error")
        assert len(form["samples"]["ready_s"]) == 1
        assert form["ready_s"]["median"] > 0
        assert form["idle_rss"]["median"] > 0
        assert form["artefact"]["compressed"] > 0
        assert form["density"]["started"] == 2
    assert forms["unikernel-cold"]["artefact"]["kernel_options"] > 0
    # the container image is made of the unikernel's runtime and app files, minus its init
    if "container-runc" in measured:
        uni, ctr = forms["unikernel-cold"]["artefact"], forms["container-runc"]["artefact"]
        assert ctr["files"] == uni["files"] - 2  # the kernel and /init (its PID 1)
    report = (out / "report.md").read_text()
    assert "| unikernel, cold boot |" in report
    for plot in ("size.png", "ready.png", "memory.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "work").exists()  # the scratch store and bundles are removed


def test_bench_compare_without_the_source_tree_says_where_it_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ukedge.cli import bench
    from ukedge.errors import UsageError

    monkeypatch.setattr(bench.ukedge, "__file__", str(tmp_path / "a" / "b" / "__init__.py"))
    with pytest.raises(UsageError, match="ships with the source tree"):
        bench.harness_dir()
