"""The comparison report rendered from a recorded run (fixtures/compare-run.json, the raw JSON
of a real run on the shared 2-core machine): every figure printed comes from the JSON, the
targets are judged from it, and a form that was not measured says so."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from compare.__main__ import main
from compare.report import TARGETS, figure, losses, markdown, table, targets, write_report

FIXTURE = Path(__file__).with_name("fixtures") / "compare-run.json"


@pytest.fixture
def run() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def _form(run: dict[str, Any], key: str) -> dict[str, Any]:
    return next(f for f in run["forms"] if f["key"] == key)


def test_header_names_accelerator_cpu_and_date(run: dict[str, Any]) -> None:
    page = markdown(run, [])
    assert f"accelerator: **{run['accelerator'].upper()}**" in page
    assert run["machine"]["cpu"] in page
    assert f"date: {run['date']}" in page


def test_table_has_one_row_per_form_with_its_recorded_figures(run: dict[str, Any]) -> None:
    rows = table(run).splitlines()[2:]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [f["label"] for f in run["forms"]]
    uni = _form(run, "unikernel-cold")
    row = next(r for r in rows if r.startswith(f"| {uni['label']} |"))
    assert f"{uni['artefact']['compressed'] / (1 << 20):.1f} / " in row
    assert f"{uni['artefact']['kernel_options']} options" in row


def test_targets_are_judged_from_the_recorded_figures(run: dict[str, Any]) -> None:
    judged = targets(run)
    assert len(judged) == len(TARGETS)
    for t in judged:
        a = figure(_form(run, t["form"]), t["figure"])
        b = figure(_form(run, t["against"]), t["figure"])
        assert a is not None and b is not None
        assert t["ratio"] == pytest.approx(a / b)
        assert t["met"] == (a / b <= t["limit"])


def test_a_form_not_measured_is_shown_as_such(run: dict[str, Any]) -> None:
    broken = copy.deepcopy(run)
    vm = _form(broken, "full-vm")
    for key in list(vm):
        if key not in ("key", "label"):
            del vm[key]
    vm["error"] = "debootstrap is not installed"
    assert f"| {vm['label']} | not measured: debootstrap is not installed |" in table(broken)
    assert all(t["met"] is None for t in targets(broken) if t["against"] == "full-vm")
    assert "**not measured**" in markdown(broken, [])


def test_losses_name_only_where_the_unikernel_is_worse(run: dict[str, Any]) -> None:
    lines = losses(run)
    process = figure(_form(run, "process"), "ready")
    cold = figure(_form(run, "unikernel-cold"), "ready")
    assert process is not None and cold is not None and cold > process
    assert any(
        line.startswith("- unikernel-cold loses to process on start-to-ready") for line in lines
    )
    vm = figure(_form(run, "full-vm"), "ready")
    assert vm is not None
    wins = cold < vm
    assert wins != any("unikernel-cold loses to full-vm on start-to-ready" in ln for ln in lines)


def test_write_report_writes_json_plots_and_page(run: dict[str, Any], tmp_path: Path) -> None:
    page = write_report(run, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == run
    for plot in ("size.png", "ready.png", "memory.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{plot}]({plot})" in page.read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_report_only_renders_a_recorded_run_again(run: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(run))
    assert main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "## Targets" in (tmp_path / "report.md").read_text()
