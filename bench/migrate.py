#!/usr/bin/env python3
"""Migration benchmark (issue 11): per mode (cold, snapshot, live), the downtime a client sees,
the move's total time, and the bytes sent against the guest's RAM and its touched RAM.

Two real agents (``ukedge host serve`` processes) on this machine, a hub they pull sensor-agg
from, and ``move_instance`` between them, as ``ukedge migrate`` does. Before each move the app
is given readings (its windows hold them); during the move two clients poll ``GET /healthz``
every 10 ms (each request on its own connection and thread; a hung one holds one of 8 slots for
50 ms at most, so it delays no other; plain sockets, so polling costs the host little CPU), one
at the source's port and one at the target's. A third, at the target's port, keeps the first
figures' poller (a request holds its slot until it ends, 0.5 s when hung): "held" is its
downtime, so the two can be compared within one run. Downtime is the time from the last
answer from the source to the first answer from the target (0 when they overlap: a cold move
answers on both for a moment). "paused" is the agent's own figure: from the guest's stop on
the source (QEMU's last pass, for live) to the target's commit. Total is the move's own time
(offer to source removed).

Bytes: "wire" is what went over the agents' TLS channel (compressed); "state" is the raw state
moved (snapshot: QEMU's saved state; live: the RAM QEMU sent, resent pages included). Touched
RAM is the snapshot's saved state of the same app (QEMU saves no zero pages), so wire/touched
compares each mode with the guest's real footprint.

``--throttle MBIT`` repeats the snapshot and live moves through a relay limited to that rate
(a token bucket per direction, tests/kit/relay.py).

``--modes …,postcopy`` adds live moves with ``--postcopy`` (QEMU switches after its first pass
when what is left does not fit the downtime limit; "switched" counts the runs where it did),
run in the same agents as the others (the target's QEMU then keeps root: QEMU 7.2 takes
userfaultfd unprivileged only where vm.unprivileged_userfaultfd is 1). ``--downtime-limit MS``
sets the limit of every live and post-copy move (default: the agent's, 300 ms).

``--compress 1,1a,0`` moves with each zlib level in turn (0: none; a snapshot's chunks are
compressed only where it pays; ``1a``: always, as before that choice was made), interleaved
run by run, so they are compared under the same load.

Usage: .venv/bin/python bench/migrate.py [--runs 3] [--throttle 20] [--compress 1]
       [--modes cold,snapshot,live,postcopy] [--downtime-limit MS] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _common import bench_home, until  # noqa: E402

from kit.agent import AgentProcess, running_agent  # noqa: E402  (tests/kit: real agents, hub)
from kit.hub import start_hub  # noqa: E402
from kit.net import free_port  # noqa: E402
from kit.relay import Relay  # noqa: E402
from ukedge import vmm  # noqa: E402
from ukedge.build import build_image  # noqa: E402
from ukedge.host import PortMapping, move_instance, run_request  # noqa: E402
from ukedge.host.migration import MigrationOffer, MigrationStatus, Mode  # noqa: E402
from ukedge.image import ImageStore  # noqa: E402
from ukedge.registry import push  # noqa: E402

IMAGE = "sensor-agg:bench"
console = Console(width=None if sys.stdout.isatty() else 140)


class _Poller:
    """Starts ``GET /healthz`` on one port every ``interval`` s, each on its own connection and
    thread, and keeps the times at which answers arrived.

    A request may hang: one sent to a paused guest, or one whose connection the target's QEMU
    accepted before the migrated state was loaded (that state's network replaces the one the
    connection was made on, so it is never answered). A hung request holds one of ``inflight``
    slots for at most ``hold`` s (then it waits on, up to ``timeout``, without one, and its
    answer still counts), so hung requests never keep the client from polling on; at most
    ``cap`` requests exist at once, as a TCG guest swamped by hundreds of half-open connections
    stops answering for seconds (that would measure the poller, not the move). ``hold=None``:
    a request holds its slot until it ends (the poller of the first figures, whose 8 slots
    the hung connections above filled for 0.5 s)."""

    def __init__(
        self,
        port: int,
        interval: float = 0.01,
        inflight: int = 8,
        *,
        hold: float | None = 0.05,
        timeout: float = 0.5,
        cap: int = 12,
    ) -> None:
        self.port = port
        self.interval = interval
        self.hold = hold
        self.timeout = timeout
        self.answers: list[float] = []
        self._slots = threading.BoundedSemaphore(inflight)
        self._alive = threading.BoundedSemaphore(cap)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> None:
        # A plain socket: an HTTP library's client set-up costs milliseconds of CPU per request,
        # which at 200 polls a second would starve the guests (TCG) of the machine's 2 cores.
        held = threading.Event()  # set once this request gave its slot back

        def give_back() -> None:
            if not held.is_set():
                held.set()
                self._slots.release()

        timer = threading.Timer(self.hold, give_back) if self.hold is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as sock:
                sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: bench\r\n\r\n")
                head = sock.recv(64)
            if head.startswith(b"HTTP/1.") and head[9:12] == b"200":
                self.answers.append(time.monotonic())
        except OSError:
            pass
        finally:
            if timer is not None:
                timer.cancel()
            give_back()
            self._alive.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._slots.acquire(timeout=1):
                if self._alive.acquire(timeout=1):
                    threading.Thread(target=self._one, daemon=True).start()
                else:
                    self._slots.release()
            time.sleep(self.interval)

    def __enter__(self) -> _Poller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


#: The bench's name for a live move with ``--postcopy``.
POSTCOPY = "postcopy"


def _one_move(
    a: AgentProcess,
    b: AgentProcess,
    kind: str,
    run: int,
    rate: float | None,
    compress: str = "1",
    downtime_limit_ms: int | None = None,
) -> dict[str, Any]:
    port_a, port_b = free_port(), free_port()
    postcopy = kind == POSTCOPY
    mode = Mode.LIVE if postcopy else Mode(kind)
    name = f"agg-{kind}-{run}-z{compress}"
    source, target = a.client(), b.client()
    source.run(
        run_request(image=IMAGE, name=name, ports=[PortMapping(host_port=port_a, guest_port=8080)])
    )
    until(lambda: _answers(port_a), 300, f"{name} answers", every=0.05)
    for i in range(20):  # the app's windows hold readings, as in use
        httpx.post(
            f"http://127.0.0.1:{port_a}/readings",
            json=[{"sensor": f"s{i}", "value": float(v)} for v in range(50)],
            timeout=30,
        )
    relays: list[Relay] = []

    def tunnel(offer: MigrationOffer) -> tuple[str, int]:
        relay = Relay((offer.host, offer.port), rate_bytes_s=rate)
        relays.append(relay)
        return "127.0.0.1", relay.port

    with (
        _Poller(port_a) as before,
        _Poller(port_b) as after,
        _Poller(port_b, hold=None) as after_held,
    ):
        started = time.monotonic()
        status: MigrationStatus = move_instance(
            source,
            name,
            target,
            mode=mode,
            ports=[PortMapping(host_port=port_b, guest_port=8080)],
            via=tunnel if rate else None,
            compress=int(compress.rstrip("a")),
            compress_always=compress.endswith("a"),
            postcopy=postcopy,
            downtime_limit_ms=downtime_limit_ms if mode is Mode.LIVE else None,
        )
        until(lambda: bool(after.answers), 120, f"{name} answers on the target", every=0.05)
        ended = time.monotonic()
    for relay in relays:
        relay.kill()
    last_source = max((t for t in before.answers if t >= started), default=started)
    first_target = min(after.answers)
    first_held = min(after_held.answers, default=ended)
    target.remove(name, force=True)
    return {
        "mode": kind,
        "throttle_mbit": rate * 8 / 1e6 if rate else None,
        "compress": compress,
        "downtime_s": max(0.0, first_target - last_source),
        "downtime_held_s": max(0.0, first_held - last_source),
        "total_s": (status.finished_at or 0) - status.started_at,
        "client_total_s": ended - started,
        "wire_bytes": status.sent_bytes,
        "state_bytes": status.state_bytes,
        "ram_bytes": status.ram_bytes,
        "paused_s": status.paused_s,
        "qemu": status.qemu,
        "steps": status.steps,
    }


@contextlib.contextmanager
def _two_agents(
    work: Path, hub: str, *, postcopy: bool
) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    root_qemu = ("--qemu-user", "") if postcopy else ()
    with (
        running_agent(work / "a", "--hub", hub, "--name", "node-a") as a,
        running_agent(work / "b", "--hub", hub, "--name", "node-b", *root_qemu) as b,
    ):
        yield a, b


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="moves per mode")
    parser.add_argument(
        "--throttle", type=float, default=20.0, help="Mbit/s of the throttled runs (0: none)"
    )
    parser.add_argument("--modes", default="cold,snapshot,live", help="also: postcopy")
    parser.add_argument(
        "--downtime-limit", type=int, help="ms, for live and postcopy moves [the agent's]"
    )
    parser.add_argument(
        "--compress", default="1", help="zlib levels to compare, e.g. 1,1a,0 (a: always)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    opts = parser.parse_args()
    modes = opts.modes.split(",")
    for kind in modes:
        if kind != POSTCOPY:
            Mode(kind)  # (ValueError names a mode that is not one)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ukedge-bench-") as tmp:
        work = Path(tmp)
        bench_home(work)
        store = ImageStore(work / "store")
        build_image(ROOT / "examples" / "sensor-agg", [IMAGE], store=store)
        hub = start_hub(work / "hub")
        try:
            push(store, IMAGE, f"{hub.host}/{IMAGE}")
            with _two_agents(work, hub.host, postcopy=POSTCOPY in modes) as (a, b):
                plans: list[tuple[str, float | None]] = [(m, None) for m in modes]
                if opts.throttle:
                    rate = opts.throttle * 1e6 / 8
                    plans += [(m, rate) for m in modes if m != Mode.COLD.value]
                levels = opts.compress.split(",")
                for mode, rate in plans:
                    for run in range(opts.runs):
                        for level in levels if mode != Mode.COLD.value else levels[:1]:
                            row = _one_move(a, b, mode, run, rate, level, opts.downtime_limit)
                            rows.append(row)
                            console.print(
                                f"{mode}{' throttled' if rate else ''} z{level} #{run}: "
                                f"downtime {row['downtime_s'] * 1000:.0f} ms, total "
                                f"{row['total_s']:.2f} s, wire {row['wire_bytes'] / 1e6:.1f} MB"
                            )
        finally:
            hub.stop()
    touched = [r["state_bytes"] for r in rows if r["mode"] == "snapshot" and not r["throttle_mbit"]]
    touched_bytes = statistics.median(touched) if touched else None
    table = Table(title=f"migration of sensor-agg, median of {opts.runs} ({_machine()})")
    for col in (
        "mode", "link", "zlib", "downtime ms", "held ms", "paused ms", "total s", "wire MB",
        "state MB", "guest RAM MB", "wire/RAM", "wire/touched", "QEMU downtime ms", "switched",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    summary = []
    keys = dict.fromkeys((r["mode"], r["throttle_mbit"], r["compress"]) for r in rows)
    for mode, rate, level in keys:
        group = [
            r for r in rows if (r["mode"], r["throttle_mbit"], r["compress"]) == (mode, rate, level)
        ]
        wire = _median(group, "wire_bytes")
        qemu_down = [r["qemu"].get("downtime_ms") for r in group if r["qemu"]]
        line = {
            "mode": mode,
            "throttle_mbit": rate,
            "compress": level,
            "downtime_ms": _median(group, "downtime_s") * 1000,
            "downtime_held_ms": _median(group, "downtime_held_s") * 1000,
            "paused_ms": statistics.median(float(r["paused_s"]) for r in group) * 1000
            if all(r["paused_s"] is not None for r in group)
            else None,
            "total_s": _median(group, "total_s"),
            "wire_mb": wire / 1e6,
            "state_mb": _median(group, "state_bytes") / 1e6,
            "ram_mb": group[0]["ram_bytes"] / 1e6,
            "wire_over_ram": wire / group[0]["ram_bytes"],
            "wire_over_touched": wire / touched_bytes if touched_bytes else None,
            "qemu_downtime_ms": statistics.median(qemu_down) if qemu_down else None,
            "switched": sum(1 for r in group if r["qemu"].get("postcopy")),
        }
        summary.append(line)
        table.add_row(
            mode,
            f"{rate:g} Mbit/s" if rate else "loopback",
            str(level) if mode != "cold" else "-",
            f"{line['downtime_ms']:.0f}",
            f"{line['downtime_held_ms']:.0f}",
            f"{line['paused_ms']:.0f}" if line["paused_ms"] is not None else "-",
            f"{line['total_s']:.2f}",
            f"{line['wire_mb']:.1f}",
            f"{line['state_mb']:.1f}",
            f"{line['ram_mb']:.0f}",
            f"{line['wire_over_ram']:.2f}",
            f"{line['wire_over_touched']:.2f}" if line["wire_over_touched"] else "-",
            f"{line['qemu_downtime_ms']:.0f}" if line["qemu_downtime_ms"] is not None else "-",
            f"{line['switched']}/{len(group)}" if mode == POSTCOPY else "-",
        )
    console.print(table)
    if opts.json:
        opts.json.write_text(
            json.dumps({"machine": _machine(), "summary": summary, "runs": rows}, indent=2)
        )
    return 0


def _machine() -> str:
    verdict = vmm.probe_accelerator()
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {verdict.accel.upper()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
