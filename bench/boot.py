#!/usr/bin/env python3
"""Boot benchmark (issue: unikernel images end to end): image sizes, boot-to-ready, idle RSS.

For each example it builds the image (kernel and runtime layers cached), then starts it N times
through the same instance manager `ukedge run` uses and measures wall time from the start call
until the app is ready: hello-c until its VM has exited (exit status collected), sensor-agg until
`GET /stats` answers on the published port. In the same run it starts the same app as a plain
host process (the static binary; `python3 main.py`) as the baseline and prints the ratio, because
this machine is shared and noisy and only same-run ratios compare. It also times a rebuild of the
unchanged app (same digest expected) and the idle RSS and PSS of sensor-agg's QEMU.

sensor-agg is also resumed from its prewarm snapshot both ways, in the same run: as a
copy-on-write template (the default: the clone maps the snapshot's RAM file privately) and from a
snapshot whose stream carries the RAM (`template_snapshots = false`: the clone loads its own
copy). One clone alone shares its template pages with nobody, so its PSS is about its RSS here;
bench/density.py measures many clones at once.

Both boot paths run in the same run: the runtime layer unpacked into the guest's RAM from the
initramfs (rows without a suffix) and served from a shared read-only erofs image on virtio-pmem
with DAX (``erofs`` rows; issue 15 item 1); their cold boots are sampled in turns, so that load
changing during the run weighs on both alike. hello-c's static runtime has nothing to serve from an
image, so its ``erofs`` row boots the same way and checks the kernel, not the path.

Where a QEMU built with only what the guests use is there (`make qemu-slim`, or `--slim-qemu
PATH`), sensor-agg's erofs cold boot and its template restore also run on it (``slim`` rows),
the cold boots in turns with the others.

The same two examples are also built for linux/arm64 in the same run (sizes, rebuild digest) and
booted on qemu-system-aarch64 ``virt``: on an x86_64 machine that is TCG emulation of another
architecture, so its times say what this machine does, not what an arm64 node with KVM does.
``--no-arm64`` leaves it out.

Usage: .venv/bin/python bench/boot.py [--runs 7] [--json FILE] [--no-arm64] [--slim-qemu PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import (
    add_slim_qemu_option,
    bench_home,
    free_port,
    instance_manager,
    slim_qemu,
    spread,
    wait_http,
)
from rich.console import Console
from rich.table import Table

from ukedge import vmm
from ukedge.build import build_image
from ukedge.host import Instance, InstanceManager, RunRequest, parse_port_mapping
from ukedge.image import ImageStore, Platform, parse_platform
from ukedge.units import format_size

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
console = Console()


def _wait_http(url: str) -> None:
    """Ready: ``url`` answers (1 s per request, as every boot figure so far was taken)."""
    wait_http(url, request_timeout=1.0)


def _proc_mem(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process, from smaps_rollup."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Pss:"):
            pss = int(line.split()[1]) * 1024
    return rss, pss


def _alternating(n: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """``n`` samples of each of ``runs``, taken in turns (order reversed every round, one
    warm-up round first): load that changes during the run then weighs on every path alike,
    where rows run one after the other compare different moments of a shared machine."""
    for once in runs.values():
        once()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(n):
        order = list(runs.items())
        for name, once in order if i % 2 == 0 else reversed(order):
            samples[name].append(once())
    return samples


def _runs(n: int, once: Callable[[], float]) -> list[float]:
    once()  # warm caches (unpacked layers, page cache) so every sampled run is comparable
    return [once() for _ in range(n)]


def hello_vm_once(manager: InstanceManager, image: str) -> float:
    """One boot of hello-c until its VM exited with the status it was asked for."""
    began = time.perf_counter()
    instance = manager.run(RunRequest(image=image, env={"HELLO_EXIT": "3"}))
    final = manager.wait(instance.id, timeout=300)
    elapsed = time.perf_counter() - began
    if final.exit_code != 3:
        raise RuntimeError(f"{image} exited {final.exit_code}, expected 3: {final.error}")
    manager.remove(instance.id)
    return elapsed


def sensor_vm_once(manager: InstanceManager, image: str, *, cold: bool) -> tuple[float, Instance]:
    """One start of sensor-agg until ``GET /stats`` answers; (seconds, the instance)."""
    port = free_port()
    began = time.perf_counter()
    instance = manager.run(
        RunRequest(image=image, ports=[parse_port_mapping(f"{port}:8080")], cold=cold)
    )
    _wait_http(f"http://127.0.0.1:{port}/stats")
    return time.perf_counter() - began, instance


def bench_hello(
    manager: InstanceManager, erofs: InstanceManager, n: int, work: Path
) -> dict[str, object]:
    booted = _alternating(
        n,
        {
            "vm": lambda: hello_vm_once(manager, "hello-c:bench"),
            "vm_erofs": lambda: hello_vm_once(erofs, "hello-c:bench"),
        },
    )

    binary = work / "hello"
    cc = (
        "musl-gcc"
        if subprocess.run(["which", "musl-gcc"], capture_output=True).returncode == 0
        else "gcc"
    )
    subprocess.run(
        [cc, "-static", "-Os", "-o", str(binary), str(EXAMPLES / "hello-c" / "hello.c")], check=True
    )

    def host_once() -> float:
        began = time.perf_counter()
        subprocess.run(
            [str(binary), "world"], env={"HELLO_EXIT": "0"}, capture_output=True, check=True
        )
        return time.perf_counter() - began

    return {**booted, "host": _runs(n, host_once)}


def bench_sensor(
    manager: InstanceManager,
    stream: InstanceManager,
    erofs: InstanceManager,
    slim: InstanceManager | None,
    n: int,
    work: Path,
) -> dict[str, object]:
    """``manager`` resumes from template snapshots, ``stream`` from RAM-in-stream ones;
    ``erofs`` boots and resumes with the runtime on a shared read-only image; ``slim`` (if
    any) boots like ``erofs`` and resumes like ``manager`` on the slim QEMU."""
    idle: dict[str, tuple[int, int]] = {}
    cold = True
    mode = "vm"
    runner = manager

    def vm_once() -> float:
        elapsed, instance = sensor_vm_once(runner, "sensor-agg:bench", cold=cold)
        if mode not in idle:
            time.sleep(2.0)  # idle: no requests, the guest waits in epoll
            assert instance.pid is not None
            idle[mode] = _proc_mem(instance.pid)
        runner.remove(instance.id, force=True)
        return elapsed

    def host_once() -> float:
        port = free_port()
        env = {**os.environ, "PORT": str(port), "RESULTS_FILE": str(work / "results.jsonl")}
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-u", str(EXAMPLES / "sensor-agg" / "main.py")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/stats")
            return time.perf_counter() - began
        finally:
            proc.terminate()
            proc.wait(10)

    def cold_on(name: str, mgr: InstanceManager) -> Callable[[], float]:
        def once() -> float:
            nonlocal mode, runner
            mode, runner = name, mgr
            return vm_once()

        return once

    cold_boots = {"vm": cold_on("vm", manager), "vm_erofs": cold_on("vm_erofs", erofs)}
    restores = [("restored", manager), ("restored_erofs", erofs), ("restored_stream", stream)]
    if slim is not None:
        cold_boots["vm_erofs_slim"] = cold_on("vm_erofs_slim", slim)
        restores.append(("restored_slim", slim))
    booted = _alternating(n, cold_boots)
    prewarm_s: dict[str, float] = {}
    restored: dict[str, list[float]] = {}
    cold = False
    for mode, runner in restores:
        began = time.perf_counter()
        runner.prewarm(RunRequest(image="sensor-agg:bench"))
        prewarm_s[mode] = time.perf_counter() - began
        restored[mode] = _runs(n, vm_once)
    return {
        **booted,
        **restored,
        "host": _runs(n, host_once),
        **{f"{_prefix(m)}idle_rss": idle[m][0] for m in idle},
        **{f"{_prefix(m)}idle_pss": idle[m][1] for m in idle},
        "prewarm_s": prewarm_s,
    }


def _prefix(mode: str) -> str:
    """Key prefix of a mode's idle figures: "" for the booted initramfs VM (the first key)."""
    return {"vm": "", "vm_erofs": "erofs_", "vm_erofs_slim": "erofs_slim_"}.get(mode, f"{mode}_")


def bench_arm64(manager: InstanceManager, n: int) -> dict[str, object]:
    """The arm64 builds booted here: hello-c to its exit, sensor-agg to HTTP, booted and resumed
    from a prewarm snapshot (emulated under TCG on an x86_64 machine)."""
    cold = True

    def sensor_once() -> float:
        elapsed, instance = sensor_vm_once(manager, "sensor-agg:arm64", cold=cold)
        manager.remove(instance.id, force=True)
        return elapsed

    hello = _runs(n, lambda: hello_vm_once(manager, "hello-c:arm64"))
    sensor = _runs(n, sensor_once)
    began = time.perf_counter()
    manager.prewarm(RunRequest(image="sensor-agg:arm64"))
    prewarm_s = time.perf_counter() - began
    cold = False
    restored = _runs(n, sensor_once)
    return {"hello": hello, "sensor": sensor, "restored": restored, "prewarm_s": prewarm_s}


def build_sizes(
    store: ImageStore, tag: str, platform: Platform | None
) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]:
    """(sizes, rebuild) of both examples built for ``platform`` (None: this machine's)."""
    sizes: dict[str, dict[str, object]] = {}
    rebuild: dict[str, dict[str, object]] = {}
    for app in ("hello-c", "sensor-agg"):
        first = build_image(EXAMPLES / app, [f"{app}:{tag}"], store=store, platform=platform)
        began = time.perf_counter()
        again = build_image(EXAMPLES / app, [f"{app}:{tag}"], store=store, platform=platform)
        rebuild[app] = {
            "seconds": time.perf_counter() - began,
            "same_digest": again.digest == first.digest,
            "digest": first.digest,
        }
        sizes[app] = {
            "layers": {layer.role: layer.size for layer in first.layers},
            "total": first.manifest.config.size
            + sum(layer.size for layer in first.manifest.layers),
        }
    return sizes, rebuild


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="sampled runs per measurement (>= 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--no-arm64", action="store_true", help="leave the arm64 builds out")
    add_slim_qemu_option(parser)
    opts = parser.parse_args()
    if opts.runs < 5:
        parser.error("--runs must be at least 5")
    slim_binary = slim_qemu(parser, opts.slim_qemu)

    with tempfile.TemporaryDirectory(prefix="ukedge-bench-") as tmp:
        work = Path(tmp)
        bench_home(work)
        store = ImageStore(work / "store")
        sizes, rebuild = build_sizes(store, "bench", None)
        verdict = vmm.probe_accelerator()
        manager = instance_manager(work / "instances", store)
        stream = instance_manager(work / "instances-stream", store, {"template_snapshots": False})
        erofs = instance_manager(work / "instances-erofs", store, shared_runtime=True)
        slim = None
        if slim_binary is not None:
            slim = instance_manager(
                work / "instances-slim", store, {"binary": str(slim_binary)}, shared_runtime=True
            )
        hello = bench_hello(manager, erofs, opts.runs, work)
        sensor = bench_sensor(manager, stream, erofs, slim, opts.runs, work)
        arm64: dict[str, object] | None = None
        if not opts.no_arm64:
            arm64_platform = parse_platform("linux/arm64")
            arm64_sizes, arm64_rebuild = build_sizes(store, "arm64", arm64_platform)
            arm64_accel = vmm.accelerator_for(arm64_platform.machine)
            times = bench_arm64(instance_manager(work / "instances-arm64", store), opts.runs)
            arm64 = {
                "accelerator": arm64_accel.accel,
                "accelerator_reason": arm64_accel.reason,
                "sizes": arm64_sizes,
                "rebuild": arm64_rebuild,
                **{k: spread(v) if isinstance(v, list) else v for k, v in times.items()},
            }

    figures = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores {platform.machine()}, Linux {platform.release()}",
        "accelerator": verdict.accel,
        "runs": opts.runs,
        "sizes": sizes,
        "rebuild": rebuild,
        "hello-c": {k: spread(v) if isinstance(v, list) else v for k, v in hello.items()},
        "sensor-agg": {k: spread(v) if isinstance(v, list) else v for k, v in sensor.items()},
        "arm64": arm64,
    }
    _print(figures)
    if opts.json:
        opts.json.write_text(json.dumps(figures, indent=2))
    return 0


def _print(f: dict[str, object]) -> None:
    console.print(
        f"[bold]ukedge boot benchmark[/bold]  {f['date']}  {f['machine']}  "
        f"accelerator: {f['accelerator']}  runs: {f['runs']}"
    )
    table = Table(title="boot-to-ready wall time (s): VM vs the same app as a host process")
    for col in ("app", "ready when", "VM min", "VM median", "VM max", "host median", "VM/host"):
        table.add_column(col)
    rows = (
        ("hello-c", "vm", "VM exited (boot)"),
        ("hello-c", "vm_erofs", "VM exited (boot, erofs host; static: no image)"),
        ("sensor-agg", "vm", "GET /stats answers (boot, initramfs)"),
        ("sensor-agg", "vm_erofs", "GET /stats answers (boot, runtime on erofs/pmem)"),
        ("sensor-agg", "restored", "GET /stats answers (resumed from template snapshot)"),
        ("sensor-agg", "restored_erofs", "GET /stats answers (resumed from template, erofs)"),
        ("sensor-agg", "restored_stream", "GET /stats answers (resumed, RAM in stream)"),
        ("sensor-agg", "vm_erofs_slim", "GET /stats answers (boot, erofs, slim QEMU)"),
        ("sensor-agg", "restored_slim", "GET /stats answers (resumed from template, slim QEMU)"),
    )
    for app, key, ready in rows:
        data = f[app]
        assert isinstance(data, dict)
        if key not in data:
            continue  # no slim QEMU
        vm, host = data[key], data["host"]
        table.add_row(
            app,
            ready,
            f"{vm['min']:.3f}",
            f"{vm['median']:.3f}",
            f"{vm['max']:.3f}",
            f"{host['median']:.3f}",
            f"{vm['median'] / host['median']:.1f}x",
        )
    console.print(table)
    _print_sizes("image size (compressed blobs, as pushed)", f)
    sensor = f["sensor-agg"]
    assert isinstance(sensor, dict)
    prewarm = sensor["prewarm_s"]
    console.print(
        "idle sensor-agg QEMU RSS / PSS: "
        + "; ".join(
            f"{format_size(sensor[f'{key}idle_rss'])} / {format_size(sensor[f'{key}idle_pss'])} "
            + what
            for key, what in (
                ("", "booted"),
                ("erofs_", "booted, erofs"),
                ("restored_", "resumed from template"),
                ("restored_erofs_", "resumed from template, erofs"),
                ("restored_stream_", "resumed, RAM in stream"),
                ("erofs_slim_", "booted, erofs, slim QEMU"),
                ("restored_slim_", "resumed from template, slim QEMU"),
            )
            if f"{key}idle_rss" in sensor
        )
    )
    console.print(
        "sensor-agg cold boot, erofs / initramfs (median): "
        f"{sensor['vm_erofs']['median'] / sensor['vm']['median']:.2f}x"
        + (
            f"; erofs on the slim QEMU / initramfs: "
            f"{sensor['vm_erofs_slim']['median'] / sensor['vm']['median']:.2f}x"
            if "vm_erofs_slim" in sensor
            else ""
        )
    )
    console.print(
        "prewarm (boot until healthy + snapshot): "
        f"{prewarm['restored']:.2f} s template, {prewarm['restored_erofs']:.2f} s template "
        f"erofs, {prewarm['restored_stream']:.2f} s stream"
    )
    arm64 = f.get("arm64")
    if isinstance(arm64, dict):
        _print_arm64(arm64)


def _print_arm64(a: dict[str, object]) -> None:
    emulated = a["accelerator"] == "tcg" and platform.machine() != "aarch64"
    console.print(
        f"[bold]arm64[/bold] ({'EMULATED: ' if emulated else ''}{a['accelerator']}, "
        f"{a['accelerator_reason']})"
    )
    table = Table(title="arm64 boot-to-ready wall time (s)")
    for col in ("app", "ready when", "min", "median", "max"):
        table.add_column(col)
    for key, app, ready in (
        ("hello", "hello-c", "VM exited (boot)"),
        ("sensor", "sensor-agg", "GET /stats answers (boot)"),
        ("restored", "sensor-agg", "GET /stats answers (resumed from template snapshot)"),
    ):
        run = a[key]
        assert isinstance(run, dict)
        table.add_row(app, ready, f"{run['min']:.3f}", f"{run['median']:.3f}", f"{run['max']:.3f}")
    console.print(table)
    _print_sizes("arm64 image size (compressed blobs, as pushed)", a)
    console.print(f"arm64 prewarm (boot until healthy + snapshot): {a['prewarm_s']:.2f} s")


def _print_sizes(title: str, f: dict[str, object]) -> None:
    """The image sizes and rebuild figures of one platform's builds (``build_sizes``)."""
    sizes = Table(title=title)
    for col in ("app", "layers", "total", "rebuild (s)", "same digest"):
        sizes.add_column(col)
    for app, info in f["sizes"].items():  # type: ignore[attr-defined]
        layers = ", ".join(f"{k}: {format_size(v)}" for k, v in info["layers"].items())
        rb = f["rebuild"][app]  # type: ignore[index]
        sizes.add_row(
            app, layers, format_size(info["total"]), f"{rb['seconds']:.2f}", str(rb["same_digest"])
        )
    console.print(sizes)


if __name__ == "__main__":
    raise SystemExit(main())
