"""The instance manager with real QEMU VMs booting the example images."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

import httpx
import pytest

from kit.cpio import cpio_members
from kit.example_checks import check_hello, check_sensor_agg
from kit.host import wait_http
from kit.net import free_port
from ukedge.errors import ImageError, InstanceError
from ukedge.host import InstanceManager, RunRequest, parse_port_mapping
from ukedge.host.instances._oplock import holding

pytestmark = pytest.mark.vm


def test_hello_exit_status_args_env_and_results(manager: InstanceManager) -> None:
    check_hello(manager)


def test_sensor_agg_serves_http_on_published_port_and_writes_results(
    manager: InstanceManager,
) -> None:
    check_sensor_agg(manager)


def test_stop_kill_remove_and_listing(manager: InstanceManager) -> None:
    port = free_port()
    first = manager.run(
        RunRequest(image="sensor-agg:1", name="one", ports=[parse_port_mapping(f"{port}:8080")])
    )
    assert [i.name for i in manager.list()] == ["one"]
    with pytest.raises(InstanceError, match="already published by instance one"):
        manager.run(RunRequest(image="sensor-agg:1", ports=[parse_port_mapping(f"{port}:8080")]))
    with pytest.raises(InstanceError, match="already in use"):
        manager.run(RunRequest(image="hello-c:1", name="one"))
    with pytest.raises(InstanceError, match="stop it first or use --force"):
        manager.remove("one")
    killed = manager.kill("one")
    assert not killed.state.active
    assert manager.list() == []
    assert [i.id for i in manager.list(all_instances=True)] == [first.id]
    manager.remove("one")
    with pytest.raises(InstanceError, match="no such instance"):
        manager.get("one")


def test_unknown_image_leaves_no_instance(manager: InstanceManager) -> None:
    with pytest.raises(ImageError, match="no such image"):
        manager.run(RunRequest(image="nope:1"))
    assert manager.list(all_instances=True) == []


def test_a_port_another_program_holds_is_refused_before_anything_is_recorded(
    manager: InstanceManager,
) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(InstanceError, match=f"127.0.0.1:{port} cannot be bound.*in use"):
            manager.run(
                RunRequest(image="hello-c:1", name="web", ports=[parse_port_mapping(f"{port}:80")])
            )
    assert manager.list(all_instances=True) == []
    assert [p.name for p in manager.root.iterdir() if p.is_dir()] == [], "no instance directory"


def test_the_rng_seed_is_not_on_qemus_command_line(manager: InstanceManager) -> None:
    """Every local user reads /proc/PID/cmdline; the seed goes in a 0600 initrd instead."""
    instance = manager.run(RunRequest(image="sensor-agg:1"))
    pid = manager.get(instance.id).pid
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    launch = Path(instance.workdir) / "launch.cpio"
    assert stat.S_IMODE(launch.stat().st_mode) == 0o600
    seed = cpio_members(launch.read_bytes())["ukedge/seed"][1]
    assert len(seed) == 32
    assert b"-initrd" in cmdline and b"-append" in cmdline
    assert b"seed" not in cmdline and seed.hex().encode() not in cmdline
    record = (Path(instance.workdir) / "vm" / "machine.json").read_text()
    assert "seed" not in record and seed.hex() not in record


def test_prewarmed_snapshot_resumes_ready_and_independent(manager: InstanceManager) -> None:
    snapshot = manager.prewarm(RunRequest(image="sensor-agg:1"))
    assert (snapshot / "vmstate").is_file()
    assert manager.prewarm(RunRequest(image="sensor-agg:1")) == snapshot, "reused, not remade"
    ports = [free_port(), free_port()]
    clones = [
        manager.run(RunRequest(image="sensor-agg:1", ports=[parse_port_mapping(f"{p}:8080")]))
        for p in ports
    ]
    assert all(manager.get(c.id).restored for c in clones)
    for i, port in enumerate(ports):
        base = f"http://127.0.0.1:{port}"
        assert wait_http(f"{base}/stats").status_code == 200
        httpx.post(f"{base}/readings", json={"sensor": f"s{i}", "value": float(i)})
    # Two clones of one snapshot keep separate state.
    assert list(httpx.get(f"http://127.0.0.1:{ports[0]}/stats").json()) == ["s0"]
    assert list(httpx.get(f"http://127.0.0.1:{ports[1]}/stats").json()) == ["s1"]
    for clone in clones:  # the app started before the snapshot; its start-up lines still show
        console = b"".join(manager.follow(clone.id, follow=False))
        assert console.count(b"sensor-agg listening") == 1, console
    cold = manager.run(RunRequest(image="sensor-agg:1", cold=True))
    assert not manager.get(cold.id).restored
    other_env = manager.run(RunRequest(image="sensor-agg:1", env={"WINDOW_SECONDS": "3"}))
    assert not manager.get(other_env.id).restored, "different launch settings: no snapshot"
    # Removing the image (the image cache calls this) removes its snapshots too.
    digest = manager.store.resolve("sensor-agg:1").digest
    assert manager.drop_snapshots({"sha256:" + "0" * 64}) == []
    assert manager.drop_snapshots({digest}) == [snapshot] and not snapshot.exists()


def test_a_snapshot_without_its_console_is_not_resumed_but_remade(
    manager: InstanceManager,
) -> None:
    """Snapshots saved before they kept the app's start-up output would run with an empty
    console: they are ignored, and the next prewarm replaces them."""
    snapshot = manager.prewarm(RunRequest(image="sensor-agg:1"))
    (snapshot / "console.log").unlink()
    assert not manager.get(manager.run(RunRequest(image="sensor-agg:1")).id).restored
    assert manager.prewarm(RunRequest(image="sensor-agg:1")) == snapshot
    assert (snapshot / "console.log").is_file()
    assert manager.get(manager.run(RunRequest(image="sensor-agg:1")).id).restored


def test_prewarm_needs_a_health_check(manager: InstanceManager) -> None:
    with pytest.raises(InstanceError, match="has no health check"):
        manager.prewarm(RunRequest(image="hello-c:1"))


def test_resumed_clone_gets_the_current_clock(manager: InstanceManager) -> None:
    """The clock stood still in the snapshot; the host sets it when the clone resumes."""
    env = {"WINDOW_SECONDS": "1"}
    manager.prewarm(RunRequest(image="sensor-agg:1", env=env))
    time.sleep(8)  # not a wait for an event: it puts the snapshot's clock 8 s behind the host's
    resumed_after = time.time()
    port = free_port()
    instance = manager.run(
        RunRequest(image="sensor-agg:1", env=env, ports=[parse_port_mapping(f"{port}:8080")])
    )
    assert manager.get(instance.id).restored
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/stats")
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while time.monotonic() < deadline and not lines:
        httpx.post(f"{base}/readings", json={"sensor": "t", "value": 1.0})
        time.sleep(0.3)
        lines = manager.results_path(instance).read_text().splitlines()
    assert lines, "no window closed"
    read_before = time.time()
    window_end = json.loads(lines[0])["window_end"]
    # The window closed after the resume and before we read it, on the host's clock; a guest
    # still on the snapshot's clock would put it 8 s or more before the resume. The 2 s allow
    # for the guest clock's own granularity, not for how long anything took.
    assert window_end > resumed_after - 2, "the guest clock is the snapshot's, not now"
    assert window_end < read_before + 2, "the guest clock runs ahead of the host's"


def test_leftovers_of_an_unfinished_prewarm_are_swept_once_its_process_died(
    manager: InstanceManager,
) -> None:
    dead, live = manager.root / ".prewarm-dead", manager.root / ".prewarm-live"
    staging, fresh_staging = manager.snapshots / ".abc.x.tmp", manager.snapshots / ".abc.y.tmp"
    for path in (dead, live, staging, fresh_staging):
        (path / "vm").mkdir(parents=True)
    long_ago = time.time() - 7200
    os.utime(staging, (long_ago, long_ago))
    with holding(live):  # a prewarm running in another process holds its directory's lock
        assert manager.sweep_prewarm_leftovers() == 2
        assert not dead.exists() and not staging.exists()
        assert live.exists(), "a prewarm is running in another process"
        assert fresh_staging.exists(), "it may be that prewarm's snapshot being written"
    assert manager.sweep_prewarm_leftovers() == 2, "once no prewarm runs, everything goes"
    assert not live.exists() and not fresh_staging.exists()
