"""Kill the host at every point where it changes durable state, restart it, check the node.

Each case runs one operation in a process of its own (``tests/kit/crash_driver.py``) with
``UKEDGE_CRASH_POINT`` naming one point, so the process dies there as under ``kill -9``; then a
new process does what a restarted agent does first, and ``kit.invariants.host_problems`` looks at
the records and at every QEMU on the machine. The image is a tiny C app that listens on a port
and never ends (built once for the module), so a surviving machine is always visible.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit import program
from kit.invariants import host_problems, qemus_under
from ukedge import vmm
from ukedge.build import build_image
from ukedge.errors import MachineError
from ukedge.faults import CRASH_POINT_ENV
from ukedge.host import Instance, InstanceState
from ukedge.host.instances._state import InstanceRecords
from ukedge.image import ImageStore

DRIVER = program("crash_driver.py")
IMAGE = "waiter:1"

_WAITER_C = r"""
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void)
{
	struct sockaddr_in addr = {0};
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	FILE *results;

	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	addr.sin_family = AF_INET;
	addr.sin_port = htons(8080);
	if (bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 16)) {
		perror("waiter: listen");
		return 1;
	}
	results = fopen("/dev/ukedge-results", "w");
	if (results) {
		fputs("{\"ready\": true}\n", results);
		fclose(results);
	}
	puts("waiter listening");
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c >= 0)
			close(c);
	}
}
"""

_WAITER_UKFILE = """
[app]
name = "waiter"
runtime = "static"

[static]
sources = ["waiter.c"]

[resources]
memory = "32M"
vcpus = 1

[[ports]]
port = 8080
protocol = "tcp"

[healthcheck]
type = "tcp"
port = 8080
interval = "200ms"
timeout = "2s"
retries = 3
"""


@pytest.fixture(scope="module")
def waiter_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("waiter-src")
    (src / "Ukfile").write_text(_WAITER_UKFILE)
    (src / "waiter.c").write_text(_WAITER_C)
    root = tmp_path_factory.mktemp("waiter-store")
    build_image(src, [IMAGE], store=ImageStore(root))
    return root


class Node:
    """A data directory the driver works on, and the means to crash and recover it."""

    def __init__(self, data: Path, store: Path) -> None:
        self.data = data
        self.store = store

    @property
    def instances(self) -> Path:
        return self.data / "instances"

    def run(self, *args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != CRASH_POINT_ENV}
        if crash is not None:
            env[CRASH_POINT_ENV] = crash
        return subprocess.run(
            [sys.executable, str(DRIVER), str(self.data), str(self.store), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def ok(self, *args: str) -> None:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr

    def crash(self, point: str, *args: str) -> None:
        done = self.run(*args, crash=point)
        assert done.returncode == -signal.SIGKILL, (
            f"{point} was not reached (exit {done.returncode}): {done.stderr}"
        )

    def records(self) -> dict[str, Instance]:
        if not (self.instances / "state.db").exists():
            return {}
        store = InstanceRecords(self.instances / "state.db")
        try:
            return {i.name: i for i in store.all()}
        finally:
            store.close()

    def recover_and_check(self) -> dict[str, Instance]:
        self.ok("recover")
        problems = host_problems(self.instances, self.data / "snapshots")
        assert not problems, problems
        return self.records()

    def machine_pid(self, instance: Instance) -> int:
        state = json.loads((Path(instance.workdir) / "vm" / "machine.json").read_text())
        return int(state["pid"])

    def kill_all(self) -> None:
        backend = vmm.create("qemu")
        for workdir in [*self.instances.glob("*/vm"), *self.instances.glob(".prewarm-*/vm")]:
            try:
                machine = backend.attach(workdir)
                if not machine.state.final:
                    machine.kill()
            except MachineError:
                pass
        for qemu in qemus_under(self.instances):  # what no machine.json names (a bug)
            os.kill(qemu.pid, signal.SIGKILL)


@pytest.fixture
def node(tmp_path: Path, waiter_store: Path) -> Iterator[Node]:
    found = Node(tmp_path / "data", waiter_store)
    yield found
    found.kill_all()


# -- creation (records only: nothing boots) -------------------------------------------------------


@pytest.mark.parametrize("point", ["host.create.after_mkdir", "host.create.after_record"])
def test_crash_while_creating(node: Node, point: str) -> None:
    node.crash(point, "create", IMAGE, "c1")
    records = node.recover_and_check()
    if point.endswith("after_record"):
        assert records["c1"].state is InstanceState.CREATED
    else:
        assert "c1" not in records
    node.ok("create", IMAGE, "c2")  # the node works on


# -- start ----------------------------------------------------------------------------------------


@pytest.mark.vm
@pytest.mark.parametrize("point", ["host.start.after_claim", "vmm.start.after_spawn"])
def test_crash_before_the_machine_is_recorded_fails_the_run_and_the_policy_restarts_it(
    node: Node, point: str
) -> None:
    node.crash(point, "run", IMAGE, "s1", "on-failure:3")
    s1 = node.recover_and_check()["s1"]
    assert s1.state is InstanceState.FAILED
    assert "died while starting" in (s1.error or "")
    assert s1.restart_at is not None, "the restart policy applies"
    assert not qemus_under(node.instances)


@pytest.mark.vm
@pytest.mark.parametrize("point", ["host.start.after_boot", "host.start.after_running"])
def test_crash_after_the_machine_started_adopts_it(node: Node, point: str) -> None:
    node.crash(point, "run", IMAGE, "s2", "no")
    s2 = node.recover_and_check()["s2"]
    assert s2.state is InstanceState.RUNNING
    assert s2.pid == node.machine_pid(s2), "the machine that runs is the one recorded"
    node.ok("stop", "s2", "30")
    assert node.recover_and_check()["s2"].state is InstanceState.EXITED


# -- stop and remove ------------------------------------------------------------------------------


@pytest.mark.vm
@pytest.mark.parametrize("point", ["host.stop.after_stopping", "host.stop.after_machine_stop"])
def test_crash_while_stopping_finishes_the_stop(node: Node, point: str) -> None:
    node.ok("run", IMAGE, "t1", "always")
    node.crash(point, "stop", "t1", "30")
    t1 = node.recover_and_check()["t1"]
    assert not t1.state.active
    assert t1.stopped_by_user and t1.restart_at is None, "a user's stop is never restarted"


@pytest.mark.vm
@pytest.mark.parametrize("point", ["host.remove.before_delete", "host.remove.after_delete"])
def test_crash_while_removing_leaves_no_machine(node: Node, point: str) -> None:
    node.ok("run", IMAGE, "r1", "always")
    node.crash(point, "rm", "r1")
    records = node.recover_and_check()
    if point.endswith("before_delete"):
        assert not records["r1"].state.active
        node.ok("rm", "r1")
    assert node.records() == {}
    assert [p.name for p in node.instances.iterdir() if p.is_dir()] == [], "nothing left"


# -- prewarm --------------------------------------------------------------------------------------


@pytest.mark.vm
@pytest.mark.parametrize(
    "point",
    ["host.prewarm.after_boot", "host.prewarm.after_snapshot", "host.prewarm.after_rename"],
)
def test_crash_while_prewarming_leaves_no_machine_and_no_half_snapshot(
    node: Node, point: str
) -> None:
    node.crash(point, "prewarm", IMAGE)
    node.recover_and_check()
    assert not list(node.instances.glob(".prewarm-*")), "the dead prewarm's directory is swept"
    snapshots = list((node.data / "snapshots").iterdir())
    assert len(snapshots) == (1 if point.endswith("after_rename") else 0)


# -- results --------------------------------------------------------------------------------------


def _deliveries(node: Node) -> list[tuple[int, str]]:
    path = node.data / "delivered.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(json.loads(line)["seq"], json.loads(line)["result"]["n"]) for line in lines]


@pytest.mark.parametrize(
    "point", ["host.spool.after_ingest", "host.spool.after_send", "host.spool.after_ack"]
)
def test_crash_while_forwarding_loses_no_result_and_repeats_none_it_acked(
    node: Node, point: str
) -> None:
    node.data.mkdir()
    lines = 7
    (node.data / "results.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(lines)))
    node.crash(point, "forward")
    node.ok("forward")
    delivered = _deliveries(node)
    assert sorted(set(delivered)) == [(n + 1, n) for n in range(lines)], "every line, numbered once"
    repeats = len(delivered) - lines
    if point.endswith("after_send"):
        # Sent, not yet marked delivered: that one batch (2 records) comes again, with the same
        # (instance, seq), so a consumer can drop it; at least once, never lost.
        assert repeats == 2
        assert delivered[:2] == delivered[2:4]
    else:
        assert repeats == 0, "what was marked delivered is never sent again"


def test_every_host_crash_point_is_exercised_here() -> None:
    """A crash point added to the host or the VMM without a case above would claim safety
    untested."""
    import re

    import ukedge.host
    import ukedge.vmm

    declared = {
        name
        for package in (ukedge.host, ukedge.vmm)
        for path in Path(package.__file__).parent.rglob("*.py")
        for name in re.findall(r'crash_point\("((?:host|vmm)\.[a-z_.]+)"\)', path.read_text())
    }
    here = set(re.findall(r'"((?:host|vmm)\.[a-z_]+\.[a-z_]+)"', Path(__file__).read_text()))
    assert declared, "no crash points found: the pattern is out of date"
    assert declared <= here, f"not exercised: {sorted(declared - here)}"
