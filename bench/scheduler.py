#!/usr/bin/env python3
"""Scheduler benchmark (issue 10 item 4): how long the pure placement functions take.

Rows, for both scoring strategies:
- ``schedule``: one call placing N replicas of one deployment over M empty nodes (3 zones,
  spread over them, a third of the nodes with the image's big layer cached);
- ``plan, fresh``: one planner pass placing N replicas split over D deployments (what the
  controller's loop does when the deployments are created);
- ``plan, steady``: the next pass over the same fleet, every replica running (what each tick
  costs once everything is placed: it must decide nothing, fast);
- ``plan, 10 % lost``: the pass after a tenth of the nodes went NotReady past the grace period
  (their replicas are re-placed).

Each figure is the best of ``--repeat`` runs (wall clock, ``time.perf_counter``), in-process.

Usage: .venv/bin/python bench/scheduler.py [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ukedge.controller import (
    DeploymentView,
    NodeView,
    ReplicaState,
    ReplicaView,
    Resources,
    ScoringStrategy,
    plan,
    schedule,
)

STRATEGIES: tuple[ScoringStrategy, ...] = ("least-allocated", "bin-pack")
SIZES = ((1_000, 100), (10_000, 1_000))  # (replicas, nodes)
NOW = 1_000.0
GRACE_S = 30.0


def fleet(count: int) -> list[NodeView]:
    return [
        NodeView(
            id=f"node-{index:05d}",
            name=f"edge-{index}",
            ready=True,
            architecture="x86_64",
            capacity=Resources(32 * 1024, 32),
            labels={"zone": f"z{index % 3}"},
            cached_layers=frozenset({"big"} if index % 3 == 0 else ()),
            last_seen=NOW,
        )
        for index in range(count)
    ]


def apps(count: int, replicas: int) -> list[DeploymentView]:
    return [
        DeploymentView(
            name=f"app-{index:04d}",
            revision=1,
            memory_mib=128,
            vcpus=1,
            replicas=replicas // count,
            spread_by="zone",
            layers={"big": 40_000_000, f"own-{index}": 100_000},
        )
        for index in range(count)
    ]


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def new_ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"r{next(counter)}"


def plan_rows(
    replicas: int, nodes: int, deployments: int, strategy: ScoringStrategy, repeat: int
) -> dict[str, float]:
    servers = fleet(nodes)
    wanted = apps(deployments, replicas)

    def fresh() -> list[ReplicaView]:
        result = plan(
            wanted, servers, [], now=NOW, grace_s=GRACE_S, strategy=strategy, new_id=new_ids()
        )
        if len(result.add) != replicas:
            raise RuntimeError(f"placed {len(result.add)} of {replicas}")
        return [dataclasses.replace(r, state=ReplicaState.RUNNING) for r in result.add]

    running = fresh()
    row = {"plan, fresh": best_of(repeat, fresh)}

    def steady() -> None:
        result = plan(
            wanted, servers, running, now=NOW, grace_s=GRACE_S, strategy=strategy, new_id=new_ids()
        )
        if result.add or result.remove:
            raise RuntimeError("a steady fleet was not left alone")

    row["plan, steady"] = best_of(repeat, steady)
    lost = {n.id for n in servers[::10]}
    broken = [
        dataclasses.replace(n, ready=False, last_seen=NOW - 2 * GRACE_S) if n.id in lost else n
        for n in servers
    ]
    stranded = sum(1 for r in running if r.node_id in lost)

    def recover() -> None:
        result = plan(
            wanted, broken, running, now=NOW, grace_s=GRACE_S, strategy=strategy, new_id=new_ids()
        )
        if len(result.add) != stranded:
            raise RuntimeError(f"re-placed {len(result.add)} of {stranded}")

    row["plan, 10 % lost"] = best_of(repeat, recover)
    return row


def schedule_row(replicas: int, nodes: int, strategy: ScoringStrategy, repeat: int) -> float:
    servers: Sequence[NodeView] = fleet(nodes)
    (app,) = apps(1, replicas)

    def run() -> None:
        placed = schedule(app, replicas, servers, [], strategy=strategy)
        if None in placed:
            raise RuntimeError("not every replica found a node")

    return best_of(repeat, run)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    console = Console()
    table = Table(title=f"placement time (s), best of {args.repeat}; {platform.processor()}")
    for column in ("replicas / nodes", "deployments", "strategy", "call", "seconds"):
        table.add_column(column)
    figures = []
    for replicas, nodes in SIZES:
        for strategy in STRATEGIES:
            seconds = schedule_row(replicas, nodes, strategy, args.repeat)
            figures.append((replicas, nodes, 1, strategy, "schedule", seconds))
            for deployments in (1, 10, 100):
                rows = plan_rows(replicas, nodes, deployments, strategy, args.repeat)
                for call, seconds in rows.items():
                    figures.append((replicas, nodes, deployments, strategy, call, seconds))
    for replicas, nodes, deployments, strategy, call, seconds in figures:
        table.add_row(f"{replicas} / {nodes}", str(deployments), strategy, call, f"{seconds:.3f}")
    console.print(table)
    if args.json:
        keys = ("replicas", "nodes", "deployments", "strategy", "call", "seconds")
        args.json.write_text(json.dumps([dict(zip(keys, f, strict=True)) for f in figures]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
