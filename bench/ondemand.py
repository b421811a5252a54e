#!/usr/bin/env python3
"""On-demand benchmark (issue: host agent): cold first-request and warm request latency of an
on-demand sensor-agg behind the agent's proxy (OnDemandController), with same-run baselines.

Baselines, measured first in the same run: boot-to-ready of sensor-agg exactly as bench/boot.py
measures it (its ``bench_sensor``: ``run()`` until ``GET /stats`` answers, booted and resumed
from a prewarm snapshot, and the app as a host process), and warm latency straight to the VM's
forwarded port, without the proxy.

Cold: the instance is scaled to zero (created, or stopped by the idle timer); the time is from
opening a connection to the proxy's port until the whole ``GET /stats`` answer has arrived. Two
instances: one that always boots (``cold=True``) and one that resumes from the prewarm snapshot
(what an on-demand instance does when its image was prewarmed). Between rounds the benchmark
waits for the idle stop.

Warm: ``GET /stats`` to a running instance, alternating proxy and direct, each on one
keep-alive connection and on a fresh connection per request. The client is a plain socket in
this process (the proxy runs on the controller's loop thread), so the figures are the proxy's
cost plus the guest's, not an HTTP library's.

Usage: .venv/bin/python bench/ondemand.py [--runs 5] [--requests 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import bench_home, free_port, instance_manager, until
from boot import bench_sensor  # bench/boot.py's own boot-to-ready measurement

from ukedge import vmm
from ukedge.build import build_image
from ukedge.host import (
    Instance,
    InstanceManager,
    OnDemandController,
    OnDemandProxy,
    ProxyState,
    RunRequest,
    parse_port_mapping,
)
from ukedge.image import ImageStore

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "sensor-agg:bench"
# Wide enough for the tables when the output goes to a file.
console = Console(width=None if sys.stdout.isatty() else 120)

_REQUEST = b"GET /stats HTTP/1.1\r\nHost: bench\r\n\r\n"


def _get(sock: socket.socket) -> None:
    """One ``GET /stats`` on ``sock``; reads exactly the answer (Content-Length)."""
    sock.sendall(_REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed mid-answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:80]!r}")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed mid-body")
        body += chunk


def _connect(address: tuple[str, int], timeout: float = 300.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _fresh(address: tuple[str, int]) -> float:
    began = time.perf_counter()
    with _connect(address) as sock:
        _get(sock)
    return time.perf_counter() - began


def _spread(samples: list[float]) -> dict[str, float]:
    return {**_common.spread(samples), "n": len(samples)}


def _on_demand(manager: InstanceManager, *, cold: bool, idle_s: float) -> Instance:
    port = free_port()
    return manager.create(
        RunRequest(
            image=IMAGE,
            ports=[parse_port_mapping(f"{port}:8080")],
            on_demand=True,
            idle_timeout_s=idle_s,
            cold=cold,
        )
    )


def bench_cold(
    manager: InstanceManager, controller: OnDemandController, instance: Instance, runs: int
) -> dict[str, object]:
    [proxy] = controller.proxies(instance.id)
    address = proxy.address
    latencies: list[float] = []
    activations: list[float] = []
    restored: list[bool] = []
    for _ in range(runs + 1):  # the first round warms caches, as bench/boot.py does
        until(lambda: not manager.get(instance.id).state.active, 120, "idle stop")
        until(lambda: proxy.state is ProxyState.IDLE, 30, "proxy idle")
        latencies.append(_fresh(address))
        assert proxy.last_activation_s is not None
        activations.append(proxy.last_activation_s)
        restored.append(manager.get(instance.id).restored)
    return {
        "latency": latencies[1:],
        "activation": activations[1:],
        "restored": all(restored[1:]),
        "boots": manager.get(instance.id).runs,
    }


def bench_warm(
    manager: InstanceManager, proxy: OnDemandProxy, instance: Instance, n: int
) -> dict[str, list[float]]:
    proxied = proxy.address
    _fresh(proxied)  # boot it (resumes from the snapshot)
    direct = manager.upstream(manager.get(instance.id), 8080)
    samples: dict[str, list[float]] = {
        "proxy keep-alive": [],
        "direct keep-alive": [],
        "proxy fresh": [],
        "direct fresh": [],
    }
    with _connect(proxied) as via, _connect(direct) as straight:
        for sock in (via, straight):  # warm both paths
            for _ in range(20):
                _get(sock)
        for _ in range(n):
            for key, sock in (("proxy keep-alive", via), ("direct keep-alive", straight)):
                began = time.perf_counter()
                _get(sock)
                samples[key].append(time.perf_counter() - began)
    for _ in range(n):
        samples["proxy fresh"].append(_fresh(proxied))
        samples["direct fresh"].append(_fresh(direct))
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="cold rounds per measurement (>= 3)")
    parser.add_argument("--requests", type=int, default=200, help="warm requests per path")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    opts = parser.parse_args()
    if opts.runs < 3:
        parser.error("--runs must be at least 3")

    with tempfile.TemporaryDirectory(prefix="ukedge-bench-") as tmp:
        work = Path(tmp)
        bench_home(work)
        store = ImageStore(work / "store")
        build_image(ROOT / "examples" / "sensor-agg", [IMAGE], store=store)
        verdict = vmm.probe_accelerator()
        manager = instance_manager(work / "instances", store)
        console.print("baseline: bench/boot.py's sensor-agg boot-to-ready (and prewarm)…")
        boot = bench_sensor(manager, opts.runs, work)  # leaves the prewarm snapshot behind

        booting = _on_demand(manager, cold=True, idle_s=1.0)
        resuming = _on_demand(manager, cold=False, idle_s=1.0)
        warm = _on_demand(manager, cold=False, idle_s=600.0)
        controller = OnDemandController(manager)
        try:
            controller.sync()
            console.print("on-demand cold rounds (booting)…")
            cold_boot = bench_cold(manager, controller, booting, opts.runs)
            console.print("on-demand cold rounds (resuming the prewarm snapshot)…")
            cold_snap = bench_cold(manager, controller, resuming, opts.runs)
            console.print("warm requests…")
            [warm_proxy] = controller.proxies(warm.id)
            warm_samples = bench_warm(manager, warm_proxy, warm, opts.requests)
        finally:
            controller.close()
            for instance in manager.list(all_instances=True):
                manager.remove(instance.id, force=True)
            manager.close()

    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores {platform.machine()}, Linux {platform.release()}",
        "accelerator": verdict.accel,
        "runs": opts.runs,
        "requests": opts.requests,
        "boot_to_ready": _spread(boot["vm"]),  # type: ignore[arg-type]
        "restored_to_ready": _spread(boot["restored"]),  # type: ignore[arg-type]
        "host_process": _spread(boot["host"]),  # type: ignore[arg-type]
        "cold_boot": {
            "latency": _spread(cold_boot["latency"]),  # type: ignore[arg-type]
            "activation": _spread(cold_boot["activation"]),  # type: ignore[arg-type]
            "restored": cold_boot["restored"],
        },
        "cold_snapshot": {
            "latency": _spread(cold_snap["latency"]),  # type: ignore[arg-type]
            "activation": _spread(cold_snap["activation"]),  # type: ignore[arg-type]
            "restored": cold_snap["restored"],
        },
        "warm": {k: _spread(v) for k, v in warm_samples.items()},
    }
    _print(figures)
    if opts.json:
        opts.json.write_text(json.dumps(figures, indent=2))
    return 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _print(f: dict[str, object]) -> None:
    console.print(
        f"[bold]ukedge on-demand benchmark[/bold]  {f['date']}  {f['machine']}  "
        f"accelerator: {f['accelerator']}  cold rounds: {f['runs']}  "
        f"warm requests per path: {f['requests']}"
    )
    boot: dict[str, float] = f["boot_to_ready"]  # type: ignore[assignment]
    restored: dict[str, float] = f["restored_to_ready"]  # type: ignore[assignment]
    cold = Table(
        title="cold: scaled to zero → whole GET /stats answer through the proxy (s); "
        "baseline: bench/boot.py's boot-to-ready, same run"
    )
    for col in ("measurement", "min", "median", "max", "start+ready", "÷ boot-to-ready", "met"):
        cold.add_column(col)
    for label, spread in (
        ("baseline: run() → GET /stats answers (boot)", boot),
        ("baseline: run() → GET /stats answers (resumed)", restored),
    ):
        cold.add_row(
            label,
            f"{spread['min']:.3f}",
            f"{spread['median']:.3f}",
            f"{spread['max']:.3f}",
            "",
            f"{spread['median'] / boot['median']:.2f}×",
            "",
        )
    for key, label in (
        ("cold_boot", "on-demand, boots (cold=True)"),
        ("cold_snapshot", "on-demand, resumes the prewarm snapshot"),
    ):
        data: dict[str, object] = f[key]  # type: ignore[assignment]
        lat: dict[str, float] = data["latency"]  # type: ignore[assignment]
        act: dict[str, float] = data["activation"]  # type: ignore[assignment]
        ratio = lat["median"] / boot["median"]
        if key == "cold_snapshot" and not data["restored"]:
            label += " [red](NOT restored)[/red]"
        cold.add_row(
            label,
            f"{lat['min']:.3f}",
            f"{lat['median']:.3f}",
            f"{lat['max']:.3f}",
            f"{act['median']:.3f}",
            f"{ratio:.2f}×",
            "yes (≤ 2×)" if ratio <= 2.0 else "no (> 2×)",
        )
    console.print(cold)
    warm_table = Table(title="warm: GET /stats to a running instance (ms); target ≤ 5 ms")
    for col in ("path", "connection", "min", "median", "max", "proxy − direct", "met"):
        warm_table.add_column(col)
    warm: dict[str, dict[str, float]] = f["warm"]  # type: ignore[assignment]
    for conn in ("keep-alive", "fresh"):
        direct = warm[f"direct {conn}"]
        proxied = warm[f"proxy {conn}"]
        warm_table.add_row(
            "direct to the VM's forward (baseline)",
            conn,
            _ms(direct["min"]),
            _ms(direct["median"]),
            _ms(direct["max"]),
            "",
            "",
        )
        warm_table.add_row(
            "through the on-demand proxy",
            conn,
            _ms(proxied["min"]),
            _ms(proxied["median"]),
            _ms(proxied["max"]),
            f"{(proxied['median'] - direct['median']) * 1000:+.2f}",
            "yes (≤ 5 ms)" if proxied["median"] <= 0.005 else "no (> 5 ms)",
        )
    console.print(warm_table)


if __name__ == "__main__":
    raise SystemExit(main())
