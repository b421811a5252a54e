#!/usr/bin/env python3
"""Fleet benchmark (issue 10 item 11): a real controller against a thousand hollow nodes.

A controller runs as its own process (``ukedge controller serve``, own data dir and port) on
SQLite and on PostgreSQL (a throw-away cluster, tests/kit/postgres.py). ``--drivers`` processes
drive the hollow nodes, a share each (``ukedge.host.link.HollowFleet``: the agent's wire
protocol and pinned TLS, no VMs; every instance they are asked to run is reported running and
healthy): one process could not send 500 heartbeats a second. Figures:

- *placement*: from the POST of the deployments (``--replicas`` split over ``--deployments``) to
  every replica reported running, as the controller's ``ukedge_controller_replicas`` gauge says;
- *heartbeats/s*: successful heartbeats counted at the controller
  (``ukedge_controller_requests_total`` of the heartbeat route) over ``--window`` seconds once
  every replica runs (so each heartbeat carries its node's ~10 instance reports);
- *recovery*: after 10 % of the nodes stop heartbeating (a tenth of each driver's), the time
  until as many replicas as desired run again (on the others), next to its bound
  ``not_ready_after + grace + 10 s``.

The nodes offer one heartbeat each per ``--interval`` (default 2 s: 1,000 nodes offer 500/s,
the target; a lower interval measures the controller's ceiling). ``--not-ready-after`` must stay
well above the interval, or nodes whose heartbeats queue up flap NotReady and their replicas
churn (seen on this machine under load with 1 s / 5 s).

Usage: .venv/bin/python bench/fleet.py [--quick] [--db sqlite,postgresql] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the throw-away PostgreSQL cluster of the tests
import ukedge  # noqa: E402
from kit.net import free_port  # noqa: E402
from kit.postgres import running_postgres  # noqa: E402
from ukedge.host.link import (  # noqa: E402
    HEARTBEAT_PATH,
    HollowFleet,
    HollowNode,
    JoinToken,
    NodeResources,
    pinned_context,
)

IMAGE = "127.0.0.1:1/bench@sha256:" + "b" * 64  # pinned by digest; no registry is asked
PLACEMENT_TARGET_S = 30.0
HEARTBEAT_TARGET = 500.0
RECOVERY_SLACK_S = 10.0
#: Enrolments each driver has under way at once: each is a write transaction (the token's use),
#: and 64 at once on SQLite left some waiting past the nodes' 10 s call timeout.
ENROL_AT_ONCE = 4
console = Console(width=120)


@dataclass
class Figures:
    db: str
    nodes: int
    replicas: int
    enrol_s: float
    placement_s: float
    heartbeats_per_s: float
    recovery_s: float
    killed: int
    client_errors: int


# -- the controller process --------------------------------------------------------------------


@dataclass
class Served:
    url: str
    cert: str
    admin_token: str
    log: Path


@contextlib.contextmanager
def controller_process(tmp: Path, db: str | None, args: argparse.Namespace) -> Iterator[Served]:
    port = free_port()
    data = tmp / "controller"
    exe = Path(sys.executable).with_name("ukedge")
    argv = [
        str(exe), "controller", "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data),
        "--not-ready-after", f"{args.not_ready_after}s", "--grace", f"{args.grace}s",
    ]  # fmt: skip
    if db is not None:
        argv += ["--db", db]
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(ukedge.__file__).resolve().parents[1]),  # these sources
        "UKEDGE_CONTROLLER_HEARTBEAT_INTERVAL_S": str(args.interval),
        "UKEDGE_CONTROLLER_ACCESS_LOG": "false",
        "UKEDGE_CONTROLLER_LOG_FORMAT": "text",
    }
    log = tmp / "controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the controller did not start:\n{log.read_text()[-3000:]}")
            cert = data / "tls.crt"
            if cert.exists() and (data / "admin.token").exists():
                try:
                    pem = cert.read_text()
                    httpx.get(f"{url}/healthz", verify=pinned_context(pem), timeout=2)
                    break
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.2)
        token = (data / "admin.token").read_text().strip()
        yield Served(url, pem, token, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- what the controller says ------------------------------------------------------------------


async def scrape(admin: httpx.AsyncClient) -> dict[str, float]:
    """The figures the bench watches, from the controller's /metrics."""
    text = (await admin.get("/metrics")).text
    found = {"heartbeats": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "ukedge_controller_requests_total":
                if labels.get("route") == HEARTBEAT_PATH and labels.get("status") == "200":
                    found["heartbeats"] += sample.value
            elif sample.name == "ukedge_controller_replicas":
                found[f"replicas:{labels['state']}"] = sample.value
            elif sample.name == "ukedge_controller_nodes":
                found[f"nodes:{labels['status']}"] = sample.value
    return found


async def until(
    admin: httpx.AsyncClient, check: Callable[[dict[str, float]], bool], what: str, limit: float
) -> float:
    """Seconds until ``check`` holds of the controller's figures (polled every 0.2 s)."""
    started = time.monotonic()
    while True:
        figures = await scrape(admin)
        if check(figures):
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise SystemExit(f"{what}: not within {limit:g} s; the controller says {figures}")
        await asyncio.sleep(0.2)


# -- the driver processes ----------------------------------------------------------------------


def driver(conn: Connection, url: str, cert: str, token: str, names: list[str], pool: int) -> None:
    """One driver process: enrols its share of the hollow nodes, heartbeats them, and obeys the
    bench (``("stop", n)``: n of its nodes die; ``("exit",)``), answering over ``conn``."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    asyncio.run(_drive_share(conn, url, cert, JoinToken.parse(token), names, pool))


async def _drive_share(
    conn: Connection, url: str, cert: str, token: JoinToken, names: list[str], pool: int
) -> None:
    capacity = NodeResources(memory_mib=64 * 1024, vcpus=64)
    async with HollowFleet(url, cert, connections=pool) as fleet:
        nodes = [HollowNode(name, capacity=capacity) for name in names]
        gate = asyncio.Semaphore(ENROL_AT_ONCE)

        async def enrol(node: HollowNode) -> None:
            async with gate:
                await fleet.enrol(node, token)

        await asyncio.gather(*(enrol(node) for node in nodes))
        fleet.start()
        while any(node.beats == 0 for node in nodes):  # each node's capacity is known
            await asyncio.sleep(0.1)
        conn.send(("beating", len(nodes)))
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "stop":
                await fleet.stop(nodes[: command[1]])
                conn.send(("stopped", command[1]))
            else:
                conn.send(("errors", fleet.errors, sum(node.beats for node in nodes)))
                return


class Drivers:
    """The driver processes of one run and the pipes to them."""

    def __init__(self, served: Served, token: str, args: argparse.Namespace) -> None:
        names = [f"hollow-{i:04d}" for i in range(args.nodes)]
        count = max(1, min(args.drivers, args.nodes))
        shares = [names[i::count] for i in range(count)]
        context = multiprocessing.get_context("spawn")  # no event loop or pool inherited
        self.pipes: list[Connection] = []
        self.procs = []
        for share in shares:
            ours, theirs = context.Pipe()
            proc = context.Process(
                target=driver,
                args=(theirs, served.url, served.cert, token, share, args.connections),
                daemon=True,
            )
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)
        self.shares = [len(share) for share in shares]

    async def ask(self, command: tuple[object, ...]) -> list[tuple[object, ...]]:
        """Send ``command`` to every driver; their answers (the bench fails if one died)."""
        for pipe in self.pipes:
            pipe.send(command)
        return await self.answers()

    async def answers(self) -> list[tuple[object, ...]]:
        return [await asyncio.to_thread(self._recv, pipe) for pipe in self.pipes]

    def _recv(self, pipe: Connection) -> tuple[object, ...]:
        while not pipe.poll(1.0):
            dead = [p.pid for p in self.procs if not p.is_alive()]
            if dead:
                raise SystemExit(f"driver process(es) {dead} died; see their output above")
        try:
            answer: tuple[object, ...] = pipe.recv()
        except EOFError:
            raise SystemExit("a driver process died; see its output above") from None
        return answer

    def close(self) -> None:
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


# -- one run -----------------------------------------------------------------------------------


async def drive(served: Served, db: str, args: argparse.Namespace) -> Figures:
    headers = {"authorization": f"Bearer {served.admin_token}"}
    async with httpx.AsyncClient(
        base_url=served.url, verify=pinned_context(served.cert), headers=headers, timeout=120
    ) as admin:
        r = await admin.post("/v1/tokens", json={"description": "hollow fleet", "uses": args.nodes})
        r.raise_for_status()
        started = time.monotonic()
        drivers = Drivers(served, r.json()["token"], args)
        try:
            await drivers.answers()  # every node enrolled and beating
            enrol_s = time.monotonic() - started
            console.print(
                f"{db}: {args.nodes} hollow nodes enrolled and beating ({len(drivers.procs)} "
                f"driver processes): {enrol_s:.1f} s"
            )

            # (a) placement: every replica placed and reported running.
            started = time.monotonic()
            share, rest = divmod(args.replicas, args.deployments)
            for index in range(args.deployments):
                body = {
                    "name": f"app-{index}", "image": IMAGE, "memory_mib": 64, "vcpus": 1,
                    "replicas": share + (1 if index < rest else 0),
                }  # fmt: skip
                (await admin.post("/v1/deployments", json=body)).raise_for_status()
            want = float(args.replicas)
            await until(admin, lambda f: f.get("replicas:running") == want, "placement", 600)
            placement_s = time.monotonic() - started
            console.print(f"{db}: {args.replicas} replicas running: {placement_s:.1f} s")

            # (b) heartbeats per second at the controller, every replica running.
            before, t0 = (await scrape(admin))["heartbeats"], time.monotonic()
            await asyncio.sleep(args.window)
            after, t1 = (await scrape(admin))["heartbeats"], time.monotonic()
            rate = (after - before) / (t1 - t0)
            console.print(f"{db}: heartbeats: {rate:.0f}/s over {t1 - t0:.1f} s")

            # (c) a tenth of the nodes (of each driver's) die; every replica runs again elsewhere.
            started = time.monotonic()
            stopped = [
                await asyncio.to_thread(_stop, pipe, max(1, n // 10))
                for pipe, n in zip(drivers.pipes, drivers.shares, strict=True)
            ]
            killed = sum(stopped)
            await drivers.answers()
            dead = float(killed)
            limit = args.not_ready_after + args.grace + 600
            await until(admin, lambda f: f.get("nodes:not-ready", 0) >= dead, "NotReady", limit)
            await until(admin, lambda f: f.get("replicas:running") == want, "recovery", limit)
            recovery_s = time.monotonic() - started
            console.print(f"{db}: {killed} nodes killed; all running again: {recovery_s:.1f} s")
            final = await drivers.ask(("exit",))
            errors = sum(int(str(answer[1])) for answer in final)
        finally:
            drivers.close()
    return Figures(
        db, args.nodes, args.replicas, enrol_s, placement_s, rate, recovery_s, killed, errors
    )


def _stop(pipe: Connection, count: int) -> int:
    pipe.send(("stop", count))
    return count


def run(db: str, args: argparse.Namespace) -> Figures:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ukedge-fleet-")))
        url = None
        if db == "postgresql":
            url = stack.enter_context(running_postgres()).create_database()
        served = stack.enter_context(controller_process(tmp, url, args))
        try:
            return asyncio.run(drive(served, db, args))
        except BaseException:
            console.print(served.log.read_text()[-3000:], markup=False)
            raise


# -- report ------------------------------------------------------------------------------------


def report(results: list[Figures], args: argparse.Namespace) -> None:
    bound = args.not_ready_after + args.grace + RECOVERY_SLACK_S
    table = Table(
        title=f"{args.replicas:,} replicas over {args.nodes:,} hollow nodes "
        f"(heartbeat every {args.interval:g} s, not_ready_after {args.not_ready_after:g} s, "
        f"grace {args.grace:g} s)"
    )
    table.add_column("figure")
    for figures in results:
        table.add_column(figures.db, justify="right")
    table.add_column("target", justify="right")

    def row(name: str, cells: list[str], target: str) -> None:
        table.add_row(name, *cells, target)

    row("enrol + first heartbeat", [f"{f.enrol_s:.1f} s" for f in results], "")
    row("placed and running", [f"{f.placement_s:.1f} s" for f in results],
        f"≤ {PLACEMENT_TARGET_S:g} s" if args.replicas >= 10_000 else "")  # fmt: skip
    row("heartbeats/s at the controller", [f"{f.heartbeats_per_s:.0f}" for f in results],
        f"≥ {HEARTBEAT_TARGET:g} (PostgreSQL)")  # fmt: skip
    row("offered heartbeats/s", [f"{args.nodes / args.interval:.0f}" for _ in results], "")
    row(f"all running after {results[0].killed} nodes died",
        [f"{f.recovery_s:.1f} s" for f in results], f"≤ {bound:g} s")  # fmt: skip
    row("failed node calls", [str(f.client_errors) for f in results], "")
    console.print(table)
    for f in results:
        verdicts = [
            ("placement", f.replicas < 10_000 or f.placement_s <= PLACEMENT_TARGET_S),
            ("recovery", f.recovery_s <= bound),
        ]
        if f.db == "postgresql":
            verdicts.append(("heartbeats", f.heartbeats_per_s >= HEARTBEAT_TARGET))
        missed = [name for name, ok in verdicts if not ok]
        console.print(f"{f.db}: " + ("targets met" if not missed else f"missed: {missed}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 replicas over 100 nodes")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--replicas", type=int)
    parser.add_argument("--deployments", type=int, default=10)
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated backends")
    parser.add_argument("--interval", type=float, default=2.0, help="heartbeat interval (s)")
    parser.add_argument("--not-ready-after", type=float, default=10.0)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--window", type=float, help="heartbeat count window (s)")
    parser.add_argument("--drivers", type=int, default=4, help="processes driving the nodes")
    parser.add_argument(
        "--connections", type=int, default=16, help="connections of each driver process"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, piped
    args.nodes = args.nodes or (100 if args.quick else 1_000)
    args.replicas = args.replicas or (1_000 if args.quick else 10_000)
    args.window = args.window or (5.0 if args.quick else 15.0)
    backends = [b.strip() for b in args.db.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"--db: unknown backend(s) {sorted(unknown)}: sqlite, postgresql")
    console.print(
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, python "
        f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    results = [run(db, args) for db in backends]
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in results], indent=1))


if __name__ == "__main__":
    main()
