"""The comparison's report: a Markdown page and PNG plots rendered from the raw JSON of a run.

Pure rendering: it reads only the JSON (``run_compare``'s output), so a recorded run renders
the same page again, and the tests check it on a committed fixture. Every figure printed comes
from the JSON; a figure the run did not measure is shown as "—", never estimated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "markdown", "plots", "targets", "write_report"]

MiB = 1 << 20

#: The issue's targets: (unikernel form, figure, other form, largest allowed ratio).
TARGETS = (
    ("unikernel-cold", "ready", "full-vm", 1 / 8),
    ("unikernel-resumed", "ready", "full-vm", 1 / 8),
    ("unikernel-cold", "compressed", "full-vm", 1 / 20),
    ("unikernel-cold", "on_disk", "full-vm", 1 / 20),
    ("unikernel-cold", "idle_rss", "full-vm", 1 / 3),
    ("unikernel-resumed", "idle_rss", "full-vm", 1 / 3),
    ("unikernel-cold", "compressed", "container-runc", 1 / 2),
)

_FIGURE_NAMES = {
    "ready": "start-to-ready (median)",
    "compressed": "image size, compressed",
    "on_disk": "image size, on disk",
    "idle_rss": "idle memory RSS (median)",
}


def _forms(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["key"]: f for f in data["forms"]}


def figure(form: dict[str, Any], name: str) -> float | None:
    """One headline figure of a form, or None when the run did not measure it."""
    if "error" in form:
        return None
    if name == "ready":
        return float(form["ready_s"]["median"])
    if name == "idle_rss":
        return float(form["idle_rss"]["median"])
    value = form.get("artefact", {}).get(name)
    return float(value) if value is not None else None


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured ratio and whether it is met (None: not measured)."""
    forms = _forms(data)
    out = []
    for uni, name, other, limit in TARGETS:
        a = figure(forms[uni], name) if uni in forms else None
        b = figure(forms[other], name) if other in forms else None
        ratio = a / b if a is not None and b else None
        out.append(
            {
                "form": uni,
                "figure": name,
                "against": other,
                "limit": limit,
                "ratio": ratio,
                "met": None if ratio is None else ratio <= limit,
            }
        )
    return out


def _mib(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / MiB:.1f}" if v >= MiB / 10 else f"{v / MiB:.3f}"


def _s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _mmm(d: dict[str, float] | None, fmt: Callable[[float | None], str]) -> str:
    if not d:
        return "—"
    return f"{fmt(d['min'])} / {fmt(d['median'])} / {fmt(d['max'])}"


def _density(d: dict[str, Any] | None) -> str:
    if not d:
        return "—"
    if d["stopped_by"] == "budget":
        return f"{d['fit_measured']} (budget reached)"
    return f"{d['started']} ran (cap); ~{d['fit_projected']} projected"


def _surface(a: dict[str, Any]) -> str:
    parts = [f"{a['files']} files, {a['executables']} executables"]
    if a.get("kernel_options") is not None:
        parts.append(f"kernel: {a['kernel_options']} options")
    else:
        parts.append("the host's kernel, shared")
    if a.get("syscalls") is not None:
        parts.append(f"seccomp: {a['syscalls']} syscalls allowed")
    elif a.get("syscalls_note"):
        parts.append("no seccomp filter")
    return "; ".join(parts)


def table(data: dict[str, Any]) -> str:
    """The headline table (also what the README shows)."""
    rows = [
        "| form | image compressed / on disk (MiB) | start-to-ready min / median / max "
        "| idle RSS median (PSS) MiB | fit in 2 GiB | attack-surface proxy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in data["forms"]:
        if "error" in f:
            rows.append(f"| {f['label']} | not measured: {f['error']} | | | | |")
            continue
        a = f["artefact"]
        rows.append(
            f"| {f['label']} | {_mib(a['compressed'])} / {_mib(a['on_disk'])} "
            f"| {_mmm(f['ready_s'], _s)} "
            f"| {_mib(f['idle_rss']['median'])} ({_mib(f['idle_pss']['median'])}) "
            f"| {_density(f.get('density'))} | {_surface(a)} |"
        )
    return "\n".join(rows)


def _verdicts(data: dict[str, Any]) -> list[str]:
    lines = []
    for t in targets(data):
        name = _FIGURE_NAMES[t["figure"]]
        want = f"≤ 1/{round(1 / t['limit'])} of {t['against']}"
        if t["ratio"] is None:
            lines.append(f"- {t['form']} {name} {want}: **not measured**")
            continue
        verdict = "**met**" if t["met"] else "**missed**"
        lines.append(
            f"- {t['form']} {name} {want}: {verdict} "
            f"(ratio {t['ratio']:.3f} = 1/{1 / t['ratio']:.1f})"
            if t["ratio"]
            else f"- {t['form']} {name} {want}: {verdict}"
        )
    return lines


#: Forms whose artefact carries its runtime (the process's does not: it uses the host's
#: python3), and one row per artefact (the container rows share one image).
_SIZED = ("container-runc", "full-vm")


def losses(data: dict[str, Any]) -> list[str]:
    """Where a unikernel form does worse than another form, by how much: start and memory
    against every other form, image size against the forms that carry their runtime."""
    forms = _forms(data)
    lines = []
    for uni in ("unikernel-cold", "unikernel-resumed"):
        if uni not in forms or "error" in forms[uni]:
            continue
        for other, f in forms.items():
            if other.startswith("unikernel") or "error" in f:
                continue
            names = ["ready", "idle_rss"]
            if other in _SIZED and uni == "unikernel-cold":
                names += ["compressed", "on_disk"]
            for name in names:
                a, b = figure(forms[uni], name), figure(f, name)
                if a is not None and b and a > b:
                    lines.append(
                        f"- {uni} loses to {other} on {_FIGURE_NAMES[name]}: "
                        f"{a / b:.1f}x ({_fmt(name, a)} vs {_fmt(name, b)})"
                    )
    return lines


def _fmt(name: str, v: float) -> str:
    return _s(v) if name == "ready" else f"{v / MiB:.1f} MiB"


def markdown(data: dict[str, Any], plot_names: list[str]) -> str:
    m = data["machine"]
    load = data["load_average"]
    notes = []
    for f in data["forms"]:
        a = f.get("artefact", {})
        if a.get("cgroup2_hidden"):
            notes.append(
                f"- {f['key']}: crun 1.8 refuses this cgroup-hybrid host, so every crun call "
                "ran in a private mount namespace with the cgroup2 mount "
                "(/sys/fs/cgroup/unified) unmounted."
            )
        if f["key"] == "container-podman" and a.get("oci_runtime"):
            notes.append(
                f"- container-podman: OCI runtime {a['oci_runtime']}, storage driver "
                f"{a.get('storage_driver')}; podman's crun fails on a cgroup-hybrid host "
                "(its runs are not in the private namespace), so podman drives runc there."
            )
        if a.get("note"):
            notes.append(f"- {f['key']}: {a['note']}.")
        if f["key"] == "full-vm" and "error" not in f:
            notes.append(
                f"- full-vm: Debian kernel {a.get('kernel', '')} and its initramfs booted by "
                "QEMU directly (-kernel/-initrd, no boot loader), root on a virtio disk opened "
                f"with snapshot=on; {f.get('runs', data['runs'])} sampled runs (a boot takes "
                "minutes under TCG on a loaded machine). The app starts before the network is "
                "configured; ready waits for both."
            )
        if f["key"] in ("container-runc", "container-crun") and "error" not in f:
            notes.append(
                f"- {f['key']}: the bundle shares the host's network namespace (runc and crun "
                "publish no ports; an engine's network does), a read-only root and, like "
                "`runc spec`'s default, no seccomp filter."
            )
    out = [
        f"# ukedge compare: {data['app']} as unikernel, container, full VM and process",
        "",
        f"- date: {data['date']}",
        f"- accelerator: **{data['accelerator'].upper()}** "
        f"({str(data.get('accelerator_reason', '')).split(': ', 1)[0]})",
        f"- CPU: {m['cpu']}, {m['cores']} cores, {m['memory'] / (1 << 30):.1f} GiB RAM, "
        f"Linux {m['kernel']}",
        f"- load average {load['before']:.1f} before, {load['after']:.1f} after: the machine "
        "is shared with other work, so absolute times are noisy; same-run ratios compare",
        f"- {data['runs']} sampled runs per form after one warm-up"
        + (" (short mode)" if data.get("short") else "")
        + f"; idle memory read {data['settle_s']:.0f} s after ready",
        "",
        "## Figures",
        "",
        table(data),
        "",
        "Start-to-ready: from the launch command until `GET /stats` answers through the published "
        "port. Idle memory: summed RSS (PSS in brackets) of every process the form needs (QEMU; "
        "the app and conmon for podman; the app for runc/crun, which exit after the start). "
        "Fit in 2 GiB: idle instances started one after another until their summed PSS passes "
        "2 GiB or the cap is reached; when capped, the projection divides 2 GiB by the measured "
        "per-instance PSS. Image sizes: compressed as shipped (OCI blobs; for the full VM a "
        "compressed qcow2), on disk as a node keeps it unpacked.",
        "",
        "## Targets",
        "",
        *_verdicts(data),
        "",
        "## Where the unikernel loses",
        "",
        *(losses(data) or ["- nowhere in this run"]),
        "",
    ]
    if notes:
        out += ["## Notes", "", *notes, ""]
    out += ["## Plots", "", *(f"![{p}]({p})" for p in plot_names), ""]
    return "\n".join(out)


def plots(data: dict[str, Any], out: Path) -> list[str]:
    """size.png, ready.png and memory.png (min–max whiskers on the median)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    forms = [f for f in data["forms"] if "error" not in f]
    labels = [f["key"] for f in forms]
    made = []

    def bars(
        name: str,
        title: str,
        unit: str,
        series: list[tuple[str, list[float]]],
        err: list[tuple[float, float]] | None = None,
        log: bool = False,
    ) -> None:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(series)
        for i, (legend, values) in enumerate(series):
            xs = [x + i * width for x in range(len(values))]
            yerr = None
            if err is not None and i == 0:
                yerr = [
                    [v - lo for v, (lo, _) in zip(values, err, strict=True)],
                    [hi - v for v, (_, hi) in zip(values, err, strict=True)],
                ]
            ax.bar(xs, values, width, label=legend, yerr=yerr, capsize=3)
        ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))])
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(unit)
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{title} ({data['accelerator'].upper()}, {data['date']})")
        if len(series) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        made.append(name)

    bars(
        "size.png",
        "image size",
        "MiB (log)",
        [
            ("compressed", [f["artefact"]["compressed"] / MiB for f in forms]),
            ("on disk", [f["artefact"]["on_disk"] / MiB for f in forms]),
        ],
        log=True,
    )
    bars(
        "ready.png",
        "start-to-ready, median (min–max)",
        "seconds (log)",
        [("median", [f["ready_s"]["median"] for f in forms])],
        err=[(f["ready_s"]["min"], f["ready_s"]["max"]) for f in forms],
        log=True,
    )
    bars(
        "memory.png",
        "idle memory of one instance",
        "MiB",
        [
            ("RSS", [f["idle_rss"]["median"] / MiB for f in forms]),
            ("PSS", [f["idle_pss"]["median"] / MiB for f in forms]),
        ],
    )
    return made


def write_report(data: dict[str, Any], out: Path) -> Path:
    """results.json, the plots and report.md in ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "results.json"
    tmp = raw.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(raw)
    names = plots(data, out)
    report = out / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text(markdown(data, names))
    tmp.replace(report)
    return report
