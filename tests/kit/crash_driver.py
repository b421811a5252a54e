"""One host operation in a process of its own, for crash-point tests (``test_crash_points``).

``python crash_driver.py DATA STORE OP ARGS...`` runs OP on the instance manager (or the results
forwarder) over ``DATA``, as the agent would, and exits. With ``UKEDGE_CRASH_POINT`` set the
process kills itself at that point; ``recover`` is then what a restarted agent does first
(``Agent.start``: re-read every instance, sweep what dead prewarms and removes left).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ukedge import paths, vmm
from ukedge.host import (
    InstanceManager,
    ResultForwarder,
    ResultSource,
    ResultSpool,
    RunRequest,
    UnpackedLayers,
    parse_restart_policy,
)
from ukedge.host.results.sinks import ResultRecord
from ukedge.image import ImageStore

#: The instance id the ``forward`` operation files its results under.
RESULTS_INSTANCE = "r" * 32


class FileSink:
    """A sink that appends every record it is given to a file, durably before it confirms:
    the test counts what arrived how often."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def deliver(self, batch: Sequence[ResultRecord]) -> int:
        with self.path.open("a") as out:
            out.writelines(record.envelope() + "\n" for record in batch)
            out.flush()
            os.fsync(out.fileno())
        return batch[-1].seq

    def close(self) -> None:
        pass


def manager(data: Path, store: Path) -> InstanceManager:
    return InstanceManager(
        data / "instances",
        ImageStore(store),
        vmm.create("qemu"),
        UnpackedLayers(paths.cache_dir() / "unpacked"),
        data / "snapshots",
    )


def forward(data: Path) -> None:
    """Deliver ``data/results.jsonl`` to the file sink in small batches, to the last line."""
    spool = ResultSpool(data / "spool.db")
    source = ResultSource(RESULTS_INSTANCE, data / "results.jsonl")
    forwarder = ResultForwarder(
        spool, [FileSink(data / "delivered.jsonl")], lambda: [source], "node", batch=2
    )
    while forwarder.run_once().more or spool.acked("file", RESULTS_INSTANCE) < spool.last_seq(
        RESULTS_INSTANCE
    ):
        pass
    spool.close()


def main(argv: list[str]) -> None:
    data, store, op, *args = argv
    if op == "forward":
        forward(Path(data))
        return
    mgr = manager(Path(data), Path(store))
    try:
        if op == "create":
            mgr.create(RunRequest(image=args[0], name=args[1]))
        elif op == "run":
            policy = parse_restart_policy(args[2])
            mgr.run(RunRequest(image=args[0], name=args[1], restart=policy))
        elif op == "stop":
            mgr.stop(args[0], timeout=float(args[1]))
        elif op == "rm":
            mgr.remove(args[0], force=True)
        elif op == "prewarm":
            mgr.prewarm(RunRequest(image=args[0]))
        elif op == "recover":
            mgr.list()
            mgr.sweep_prewarm_leftovers()
            mgr.sweep_removed_leftovers()
        else:
            raise SystemExit(f"unknown operation {op!r}")
    finally:
        mgr.close()


if __name__ == "__main__":
    main(sys.argv[1:])
