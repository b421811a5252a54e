#!/usr/bin/env python3
"""Density benchmark (issue: host agent): how many idle sensor-agg instances fit in host memory.

Starts idle sensor-agg instances through the instance manager (what `ukedge run` and the agent
use), one after another, until their QEMU processes' summed RSS (`--by pss`: PSS) reaches the
memory allotment (`--memory`, default 1G) or `--max` instances run. Each instance is started,
waited for until its health check passes, then left alone for `--settle` seconds before the next
one. Three rows: resumed from the image's prewarm snapshot as a copy-on-write template (what the
manager does by default once `ukedge image prewarm` ran: every clone maps the snapshot's RAM file
privately, so the pages no clone changed are one copy in the host page cache), resumed from a
snapshot whose migration stream carries the RAM (`template_snapshots = false`, the older path:
each clone loads its own copy), and cold-booted; the template and cold rows also run with the
runtime layer on a shared read-only erofs image (virtio-pmem, DAX) instead of the initramfs
(`-erofs` rows), so both boot paths are measured in one run. For the resumed rows the start time is
restore-to-ready (the run call until the health check passes). Where a QEMU built with only what
the guests use is there (`make qemu-slim`, or `--slim-qemu PATH`), the `-slim` rows run the
template and erofs cold-boot rows again on it, beside Debian's build in the same run.

Per instance it reports three measures of the host memory an idle instance costs:
- RSS of its QEMU (VmRSS): counts shared pages (the mapped vmlinux, QEMU's own binary and
  libraries, pages KSM merged) in every instance, so it overstates the total;
- PSS of its QEMU (smaps_rollup): shared pages split between the processes that map them
  (a template's unchanged RAM pages are split between its clones);
- the drop of MemAvailable (/proc/meminfo) while the instances run, against the mean of the
  readings before the first start and after the last removal, divided by the number of
  instances: what the host really lost, including memory no process maps (QEMU's page tables,
  kernel slab); other work on the machine adds noise to it, and clean file pages (the mapped
  vmlinux and initrd, a template's RAM file) count as available.
It also reports the disk each instance's own directory takes (what a start writes: logs, the
joined initramfs of a booted machine; the pages written sit in the host's page cache, where
MemAvailable counts them as available). For the last instance of each row it splits the RSS by
mapping (/proc/<pid>/smaps): QEMU's binary and shared libraries, other mapped files (a
template's RAM file, the kernel, the initrd), the TCG translation cache (QEMU's only anonymous
executable mapping), the heap, and the rest of the anonymous memory (guest RAM when it is not
a file, thread stacks, malloc arenas).
The baseline, measured in the same run, is the same app as a plain host process
(`python3 -S -u main.py`, as in bench/boot.py), several at once, by the same measures.

`--ksm` turns on the host's kernel same-page merging (/sys/kernel/mm/ksm/run) for the run and
restores the previous setting at the end; QEMU marks guest RAM mergeable by default.

Every instance is removed at the end, also on Ctrl-C.

Usage: .venv/bin/python bench/density.py [--memory 1G] [--max 24] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from _common import (
    add_slim_qemu_option,
    bench_home,
    free_port,
    instance_manager,
    slim_qemu,
    spread,
)
from boot import EXAMPLES, _proc_mem, _wait_http
from rich.console import Console
from rich.table import Table

from ukedge import vmm
from ukedge.build import build_image
from ukedge.host import (
    InstanceManager,
    RunRequest,
    parse_port_mapping,
    wait_healthy,
)
from ukedge.image import ImageStore
from ukedge.units import parse_size

IMAGE = "sensor-agg:bench"
GIB = 1 << 30
KSM = Path("/sys/kernel/mm/ksm")
ROWS = {
    "resumed": "VM, resumed from template (RAM file mapped privately)",
    "resumed-erofs": "VM, resumed from template, runtime on shared erofs/pmem",
    "resumed-stream": "VM, resumed from stream (own RAM copy)",
    "cold": "VM, cold boot",
    "cold-erofs": "VM, cold boot, runtime on shared erofs/pmem",
    "resumed-slim": "VM, resumed from template, slim QEMU",
    "cold-erofs-slim": "VM, cold boot, runtime on shared erofs/pmem, slim QEMU",
}
#: Rows whose runtime layer is served from a shared read-only erofs image (issue 15 item 1).
EROFS_ROWS = frozenset({"resumed-erofs", "cold-erofs", "cold-erofs-slim"})
#: Rows on the slim QEMU (``--slim-qemu``); left out when there is none.
SLIM_ROWS = frozenset({"resumed-slim", "cold-erofs-slim"})
#: Backend options of a row beyond the run's own (``--tb-size``).
ROW_OPTIONS: dict[str, dict[str, object]] = {"resumed-stream": {"template_snapshots": False}}
#: The parts :func:`_smaps_split` divides a QEMU's RSS into.
SPLIT = ("qemu+libs", "files", "tcg", "heap", "anon")
console = Console(stderr=True)


@dataclass
class Row:
    """One way of starting instances, and what they cost."""

    label: str
    started: int = 0
    #: Instances whose cumulative RSS (in start order, sampled while they ran) fit the allotment.
    fit: int = 0
    start_s: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    avail_drop: int = 0
    #: Host CPU the idle instances used while settling, percent of one core per instance.
    idle_cpu_pct: list[float] = field(default_factory=list)
    stopped_by: str = ""
    #: Disk used by each instance's own directory, bytes.
    disk: list[int] = field(default_factory=list)
    #: RSS of the last instance by kind of mapping (:func:`_smaps_split`).
    split: dict[str, int] = field(default_factory=dict)

    def figures(self) -> dict[str, object]:
        n = max(self.started, 1)
        return {
            "label": self.label,
            "started": self.started,
            "fit_in_allotment": self.fit,
            "stopped_by": self.stopped_by,
            "start_s": spread(self.start_s) if self.start_s else None,
            "rss": spread([float(x) for x in self.rss]) if self.rss else None,
            "pss": spread([float(x) for x in self.pss]) if self.pss else None,
            "rss_mean": sum(self.rss) / n,
            "pss_mean": sum(self.pss) / n,
            "avail_drop_per_instance": self.avail_drop / n,
            "rss_split_last_instance": self.split,
            "disk_median": statistics.median(self.disk) if self.disk else None,
            "idle_cpu_pct_median": statistics.median(self.idle_cpu_pct)
            if self.idle_cpu_pct
            else None,
            "per_gib": {
                "rss": GIB / (sum(self.rss) / n) if self.rss else None,
                "pss": GIB / (sum(self.pss) / n) if self.pss else None,
                "mem_available": GIB / (self.avail_drop / n) if self.avail_drop > 0 else None,
            },
        }


def _smaps_split(smaps: str, exe: str) -> dict[str, int]:
    """RSS by kind of mapping (the keys of :data:`SPLIT`) from a /proc/<pid>/smaps text.

    QEMU's binary (``exe``, wherever it is installed) and libraries are file mappings under
    /usr or a ``.so``; the TCG cache is the one anonymous mapping that is executable.
    """
    split = dict.fromkeys(SPLIT, 0)
    kind = "anon"
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            name = head[5] if len(head) > 5 else ""
            if name == "[heap]":
                kind = "heap"
            elif name == exe or name.startswith("/usr/") or ".so" in Path(name).name:
                kind = "qemu+libs"
            elif name.startswith("/"):
                kind = "files"
            elif "x" in head[1]:
                kind = "tcg"
            else:
                kind = "anon"
        elif head and head[0] == "Rss:":
            split[kind] += int(head[1]) * 1024
    return split


def _disk(path: Path) -> int:
    """Bytes of disk the files under ``path`` take (allocated blocks, not apparent sizes)."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settle_and_sample(pids: list[int], settle: float) -> tuple[list[float], int]:
    """Sleep ``settle`` seconds; return each process's CPU use meanwhile (% of one core) and
    MemAvailable at the end."""
    before = [_proc_cpu(p) for p in pids]
    began = time.monotonic()
    time.sleep(settle)
    spent = time.monotonic() - began
    cpu = [100.0 * (_proc_cpu(p) - b) / spent for p, b in zip(pids, before, strict=True)]
    return cpu, _mem_available()


def _drift_corrected(before: int, during: int) -> int:
    """MemAvailable lost while the processes ran: against the mean of the readings before the
    first start and after the last removal, so a steady drift from other work cancels out."""
    time.sleep(1.0)  # exiting processes give their memory back asynchronously
    return (before + _mem_available()) // 2 - during


#: KSM scan rate during the run (pages per 20 ms wake-up): the kernel default, which merges a
#: dozen resumed guests within a minute for <1% of a core.
KSM_PAGES_TO_SCAN = 100


@contextlib.contextmanager
def _ksm(enabled: bool, pages_to_scan: int) -> Iterator[None]:
    """Kernel same-page merging on for the run (root only), settings restored afterwards."""
    if not enabled:
        yield
        return
    settings = {"run": "1", "pages_to_scan": str(pages_to_scan)}
    previous = {name: (KSM / name).read_text().strip() for name in settings}
    try:
        for name, value in settings.items():
            (KSM / name).write_text(value + "\n")
    except OSError as exc:
        raise SystemExit(f"--ksm needs root and a kernel with KSM ({KSM}: {exc})") from None
    try:
        yield
    finally:
        for name, value in previous.items():
            (KSM / name).write_text(value + "\n")


def _ksm_running() -> int | None:
    """pages_to_scan when the host already runs KSM, else None."""
    with contextlib.suppress(OSError):
        if (KSM / "run").read_text().strip() == "1":
            return int((KSM / "pages_to_scan").read_text())
    return None


def _ksm_settle(timeout: float = 180.0) -> None:
    """Wait until KSM has passed three times over every mergeable page: the pass in progress,
    one that records each page's checksum, one that merges the pages found unchanged."""
    if (KSM / "run").read_text().strip() != "1":
        return
    target = int((KSM / "full_scans").read_text()) + 3
    deadline = time.monotonic() + timeout
    while int((KSM / "full_scans").read_text()) < target and time.monotonic() < deadline:
        time.sleep(0.5)
    ksmd = _ksmd_pid()
    cpu = _settle_and_sample([ksmd], 5.0)[0][0] if ksmd else float("nan")
    console.print(
        f"  KSM: {(KSM / 'pages_sharing').read_text().strip()} pages sharing "
        f"{(KSM / 'pages_shared').read_text().strip()} shared pages; ksmd at "
        f"{(KSM / 'pages_to_scan').read_text().strip()} pages/wake-up uses {cpu:.1f}% of a "
        "core once merged"
    )


def _ksmd_pid() -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if stat.read_text().startswith(f"{stat.parent.name} (ksmd)"):
                return int(stat.parent.name)
    return None


def _alive(manager: InstanceManager, instance_id: str) -> Callable[[], bool]:
    return lambda: manager.get(instance_id).state.active


def bench_vm(
    manager: InstanceManager,
    row: Row,
    *,
    cold: bool,
    allotment: int,
    limit: int,
    settle: float,
    by: str,
) -> None:
    """Start instances until their summed RSS (or PSS) reaches ``allotment`` or ``limit`` run."""
    _, manifest = manager.store.manifest(IMAGE)
    check = manager.store.config(manifest).healthcheck
    assert check is not None, "sensor-agg declares a health check"
    instances: list[str] = []
    pids: list[int] = []
    baseline_avail = _mem_available()
    try:
        while len(instances) < limit:
            port = free_port()
            began = time.perf_counter()
            instance = manager.run(
                RunRequest(
                    image=IMAGE, ports=[parse_port_mapping(f"{port}:{check.port}")], cold=cold
                )
            )
            instances.append(instance.id)
            assert instance.pid is not None
            pids.append(instance.pid)
            alive = _alive(manager, instance.id)
            wait_healthy(check, "127.0.0.1", port, timeout=120.0, alive=alive)
            row.start_s.append(time.perf_counter() - began)
            time.sleep(settle)
            used = sum(_proc_mem(p)[0 if by == "rss" else 1] for p in pids)
            console.print(
                f"  {row.label}: {len(pids)} running, QEMU {by.upper()} sum {_mib(used)} MiB, "
                f"MemAvailable drop {_mib(baseline_avail - _mem_available())} MiB"
            )
            if used <= allotment:
                row.fit = len(pids)
            if used >= allotment:
                row.stopped_by = f"{by.upper()} sum reached {_mib(allotment)} MiB"
                break
        else:
            row.stopped_by = f"--max {limit}"
        row.started = len(instances)
        _ksm_settle()
        row.idle_cpu_pct, avail = _settle_and_sample(pids, max(settle, 3.0))
        for pid in pids:
            rss, pss = _proc_mem(pid)
            row.rss.append(rss)
            row.pss.append(pss)
        last = Path(f"/proc/{pids[-1]}")
        row.split = _smaps_split((last / "smaps").read_text(), str((last / "exe").readlink()))
        row.disk = [_disk(manager.root / iid) for iid in instances]
    finally:
        # Every instance of this manager is the bench's (its root is a temporary directory),
        # including one whose run() was interrupted before it returned.
        for iid in {*instances, *(i.id for i in manager.list(all_instances=True))}:
            with contextlib.suppress(Exception):
                manager.remove(iid, force=True)
    row.avail_drop = _drift_corrected(baseline_avail, avail)


def bench_host(row: Row, work: Path, count: int, settle: float) -> None:
    """The same app as plain host processes, ``count`` at once."""
    procs: list[subprocess.Popen[bytes]] = []
    baseline_avail = _mem_available()
    try:
        for i in range(count):
            port = free_port()
            env = {**os.environ, "PORT": str(port), "RESULTS_FILE": str(work / f"r{i}.jsonl")}
            began = time.perf_counter()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-S", "-u", str(EXAMPLES / "sensor-agg" / "main.py")],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            row.start_s.append(time.perf_counter() - began)
        row.started = row.fit = count
        row.stopped_by = f"{count} processes"
        pids = [p.pid for p in procs]
        row.idle_cpu_pct, avail = _settle_and_sample(pids, max(settle, 3.0))
        for pid in pids:
            rss, pss = _proc_mem(pid)
            row.rss.append(rss)
            row.pss.append(pss)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    row.avail_drop = _drift_corrected(baseline_avail, avail)


def _interrupt_on_signals() -> None:
    """SIGTERM, and SIGINT even where the caller left it ignored (a background job), end the
    run through KeyboardInterrupt, so the cleanup in ``finally`` blocks runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--memory", default="1G", help="host memory allotment (QEMU RSS sum)")
    parser.add_argument(
        "--by",
        choices=("rss", "pss"),
        default="rss",
        help="what counts against --memory: QEMU RSS (default) or PSS (sees KSM sharing)",
    )
    parser.add_argument("--max", type=int, default=24, help="at most this many instances per row")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds after each start")
    parser.add_argument("--baseline", type=int, default=8, help="host processes for the baseline")
    parser.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"which rows: {', '.join(ROWS)} (comma-separated)",
    )
    parser.add_argument("--tb-size", type=int, help="TCG translation cache, MiB (backend option)")
    add_slim_qemu_option(parser)
    parser.add_argument("--ksm", action="store_true", help="enable host KSM during the run")
    parser.add_argument(
        "--ksm-pages", type=int, default=KSM_PAGES_TO_SCAN, help="KSM pages_to_scan with --ksm"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    opts = parser.parse_args()
    allotment = parse_size(opts.memory)
    rows_wanted = [r.strip() for r in opts.rows.split(",") if r.strip()]
    if not rows_wanted or set(rows_wanted) - set(ROWS):
        parser.error(f"--rows takes {', '.join(ROWS)}")
    slim_binary = slim_qemu(parser, opts.slim_qemu) if SLIM_ROWS & set(rows_wanted) else None
    if slim_binary is None:
        rows_wanted = [r for r in rows_wanted if r not in SLIM_ROWS]
    _interrupt_on_signals()

    backend_options: dict[str, object] = {}
    if opts.tb_size:
        backend_options["tb_size_mib"] = opts.tb_size
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="ukedge-density-") as tmp,
        _ksm(opts.ksm, opts.ksm_pages),
    ):
        work = Path(tmp)
        # Keep the shared cache (built kernel, runtime layers); only the home is throw-away.
        bench_home(work)
        store = ImageStore(work / "store")
        began = time.perf_counter()
        build_image(EXAMPLES / "sensor-agg", [IMAGE], store=store)
        console.print(f"build: {time.perf_counter() - began:.2f} s")
        verdict = vmm.probe_accelerator()
        load_before = os.getloadavg()
        host = Row("host process (python3 main.py)")
        bench_host(host, work, opts.baseline, opts.settle)
        rows.append(host)
        for mode in rows_wanted:
            # A manager (own root, so its own prewarm snapshot) per row: the snapshot path is
            # a backend option.
            manager = instance_manager(
                work / f"instances-{mode}",
                store,
                {
                    **backend_options,
                    **ROW_OPTIONS.get(mode, {}),
                    **({"binary": str(slim_binary)} if mode in SLIM_ROWS else {}),
                },
                shared_runtime=mode in EROFS_ROWS,
            )
            if not mode.startswith("cold"):
                began = time.perf_counter()
                manager.prewarm(RunRequest(image=IMAGE))
                console.print(f"prewarm ({mode}): {time.perf_counter() - began:.2f} s")
            row = Row(ROWS[mode])
            bench_vm(
                manager,
                row,
                cold=mode.startswith("cold"),
                allotment=allotment,
                limit=opts.max,
                settle=opts.settle,
                by=opts.by,
            )
            rows.append(row)
        load_after = os.getloadavg()

    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores {platform.machine()}, Linux {platform.release()}",
        "accelerator": verdict.accel,
        "load_average": {"before": load_before[0], "after": load_after[0]},
        "memory_allotment": allotment,
        "allotment_counted_by": opts.by,
        "backend_options": backend_options,
        # KSM may also be on because the host runs it anyway: say so, it changes PSS.
        "ksm": opts.ksm_pages if opts.ksm else _ksm_running(),
        "rows": [r.figures() for r in rows],
    }
    _print(figures)
    if opts.json:
        opts.json.write_text(json.dumps(figures, indent=2))
    return 0


def _mib(value: object) -> str:
    return f"{float(value) / (1 << 20):.1f}" if isinstance(value, int | float) else "-"


def _print(f: dict[str, object]) -> None:
    out = Console(width=200)
    load = f["load_average"]
    assert isinstance(load, dict)
    ksm = f"  KSM on ({f['ksm']} pages/scan)" if f["ksm"] else ""
    out.print(
        f"[bold]ukedge density benchmark[/bold]  {f['date']}  {f['machine']}  "
        f"accelerator: {f['accelerator']}  load avg {load['before']:.1f} → {load['after']:.1f}  "
        f"allotment {_mib(f['memory_allotment'])} MiB of {str(f['allotment_counted_by']).upper()}  "
        f"options {f['backend_options'] or 'default'}{ksm}"
    )
    table = Table(title="idle sensor-agg instances: host memory per instance (MiB) and per GiB")
    for col in (
        "row",
        "started",
        "fit",
        "RSS min/med/max",
        "PSS mean",
        "MemAvail drop",
        "per GiB: RSS",
        "PSS",
        "MemAvail",
        "idle CPU %",
        "disk (med)",
    ):
        table.add_column(col)
    for row in f["rows"]:  # type: ignore[attr-defined]
        rss, per = row["rss"], row["per_gib"]
        table.add_row(
            row["label"],
            str(row["started"]),
            str(row["fit_in_allotment"]),
            f"{_mib(rss['min'])} / {_mib(rss['median'])} / {_mib(rss['max'])}" if rss else "-",
            _mib(row["pss_mean"]),
            _mib(row["avail_drop_per_instance"]),
            *(f"{per[k]:.1f}" if per[k] else "-" for k in ("rss", "pss", "mem_available")),
            f"{row['idle_cpu_pct_median']:.1f}" if row["idle_cpu_pct_median"] is not None else "-",
            _mib(row["disk_median"]),
        )
    out.print(table)
    split = Table(title="RSS of the last instance of each row by mapping (MiB)")
    split.add_column("row")
    for col in SPLIT:
        split.add_column(col)
    for row in f["rows"]:  # type: ignore[attr-defined]
        if row["rss_split_last_instance"]:
            split.add_row(row["label"], *(_mib(row["rss_split_last_instance"][k]) for k in SPLIT))
    out.print(split)
    for row in f["rows"]:  # type: ignore[attr-defined]
        start = row["start_s"]
        out.print(
            f"{row['label']}: stopped by {row['stopped_by']}; "
            f"{'restore' if 'resumed' in row['label'] else 'start'}-to-healthy "
            f"min {start['min']:.2f} / median {start['median']:.2f} / max {start['max']:.2f} s"
        )


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        console.print("interrupted; every instance started was removed")
        raise SystemExit(130) from None
