"""QEMU without root: as root, the manager's QEMU drops to ``nobody`` after setting up the
machine. Everything a user does must still work: boot, forwarded ports, logs, results, stats,
stop, prewarm snapshots and resuming from them, starting again."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from kit.host import wait_http
from kit.net import free_port
from ukedge.host import (
    InstanceState,
    RunRequest,
    default_qemu_user,
    open_manager,
    parse_port_mapping,
)

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root"),
]


def _uids(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return line.split()[1:]
    raise AssertionError(f"no Uid line for pid {pid}")


def test_qemu_runs_as_nobody_through_the_whole_lifecycle(
    example_store: Path, ukedge_home: Path
) -> None:
    assert default_qemu_user() == "nobody"
    (ukedge_home / "store").symlink_to(example_store)
    manager = open_manager()
    # Snapshots live in the shared cache; this test's must not make other tests' runs resume.
    manager.snapshots = ukedge_home / "snapshots"
    assert manager.backend.options.run_as == "nobody"  # type: ignore[attr-defined]
    try:
        snapshot = manager.prewarm(RunRequest(image="sensor-agg:1"))
        assert (snapshot / "vmstate").stat().st_size > 0
        port = free_port()
        web = manager.run(
            RunRequest(image="sensor-agg:1", name="web", ports=[parse_port_mapping(f"{port}:8080")])
        )
        assert web.restored, "resumed from the snapshot a nobody-QEMU saved"
        assert _uids(web.pid or 0) == ["65534"] * 4
        base = f"http://127.0.0.1:{port}"
        assert wait_http(f"{base}/healthz").status_code == 200
        httpx.post(f"{base}/readings", json={"sensor": "t", "value": 1.0})
        assert httpx.get(f"{base}/stats").json()["t"]["count"] == 1
        assert manager.stats("web").rss_bytes > 0
        for path in (Path(web.workdir), Path(web.workdir) / "vm", manager.root):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        stopped = manager.stop("web", timeout=20)
        assert stopped.state is InstanceState.EXITED and stopped.exit_code in (0, 143)

        hello = manager.run(RunRequest(image="hello-c:1", name="hello", args=["nobody"]))
        assert _uids(hello.pid or 0)[0] == "65534" or not manager.get("hello").state.active
        done = manager.wait("hello", timeout=120)
        assert (done.state, done.exit_code) == (InstanceState.EXITED, 0)
        manager.start("hello")
        again = manager.wait("hello", timeout=120)
        assert (again.state, again.exit_code, again.runs) == (InstanceState.EXITED, 0, 2)
        console = b"".join(manager.follow("hello", follow=False)).decode(errors="replace")
        assert console.count("Hello, nobody!") == 2
        lines = manager.results_path(again).read_text().splitlines()
        assert len(lines) == 2 and all(json.loads(line) for line in lines)
    finally:
        for instance in manager.list():
            manager.remove(instance.id, force=True)
        manager.close()
