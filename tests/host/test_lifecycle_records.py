"""Creating instances, admission and events: real images, records only (nothing boots)."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from kit.net import free_port
from ukedge import paths, vmm
from ukedge.errors import AdmissionError, InstanceError
from ukedge.host import (
    Instance,
    InstanceEvent,
    InstanceManager,
    InstanceState,
    RunRequest,
    UnpackedLayers,
    parse_port_mapping,
    parse_restart_policy,
)
from ukedge.host.instances._admission import Capacity
from ukedge.host.instances._oplock import holding
from ukedge.image import ImageStore

# Every test records instances of the example images (example_store builds them).
pytestmark = pytest.mark.kernel

MIB = 1 << 20


def _manager(example_store: Path, home: Path, capacity: Capacity | None) -> InstanceManager:
    return InstanceManager(
        home / "instances",
        ImageStore(example_store),
        vmm.create("qemu"),
        UnpackedLayers(paths.cache_dir() / "unpacked"),
        capacity=capacity,
    )


def test_create_records_a_private_directory_and_starts_nothing(
    example_store: Path, ukedge_home: Path
) -> None:
    manager = _manager(example_store, ukedge_home, None)
    events: list[InstanceEvent] = []

    def broken(_: InstanceEvent) -> None:
        raise RuntimeError("a listener bug")

    manager.listeners += [broken, events.append]
    instance = manager.create(RunRequest(image="hello-c:1", name="quiet"))
    assert instance.state is InstanceState.CREATED
    workdir = Path(instance.workdir)
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert stat.S_IMODE(manager.root.stat().st_mode) == 0o700
    assert not (workdir / "vm").exists(), "no machine yet"
    assert manager.get("quiet").state is InstanceState.CREATED
    assert manager.list() == [], "a created instance is not active"
    assert [(e.action, e.state, e.name) for e in events] == [
        ("create", InstanceState.CREATED, "quiet")
    ]
    assert b"".join(manager.follow("quiet", follow=False)) == b""
    stopped = manager.stop("quiet")
    assert stopped.state is InstanceState.CREATED
    assert len(events) == 1, "stopping what does not run changes no state"
    manager.remove("quiet")
    assert [e.action for e in events] == ["create", "remove"]
    assert not workdir.exists()


def test_on_demand_instances_are_created_not_started_and_hold_their_room(
    example_store: Path, ukedge_home: Path
) -> None:
    capacity = Capacity(memory_allocatable_bytes=200 * MIB, cpus=4)
    manager = _manager(example_store, ukedge_home, capacity)
    port = free_port()
    lazy = manager.run(
        RunRequest(
            image="sensor-agg:1",
            name="lazy",
            ports=[parse_port_mapping(f"{port}:8080")],
            on_demand=True,
            idle_timeout_s=5,
        )
    )
    assert lazy.state is InstanceState.CREATED
    assert (lazy.on_demand, lazy.idle_timeout_s, lazy.memory_mib) == (True, 5, 96)
    committed = manager.committed()
    assert (committed.memory_bytes, committed.vcpus) == (96 * MIB, 1)
    with pytest.raises(InstanceError, match="has no host-side forward to guest port 8080"):
        manager.upstream(lazy, 8080)
    with pytest.raises(InstanceError, match=f"{port} is already published by instance lazy"):
        manager.create(RunRequest(image="hello-c:1", ports=[parse_port_mapping(f"{port}:8080")]))
    with pytest.raises(AdmissionError) as refused:
        manager.create(RunRequest(image="sensor-agg:1", name="big", memory_mib=128))
    assert "node cannot take instance big (128 MiB, 1 vCPU)" in str(refused.value)
    assert "104 MiB of 200 MiB allocatable memory left at over-commit 1" in str(refused.value)
    assert [i.name for i in manager.list(all_instances=True)] == ["lazy"], "nothing half-made"
    assert sorted(p.name for p in manager.root.iterdir() if p.is_dir()) == [lazy.id]
    small = manager.create(RunRequest(image="hello-c:1", name="small"))
    assert small.memory_mib == 32
    manager.remove("lazy")
    assert manager.committed().memory_bytes == 0, "a created, not on-demand instance holds none"


def test_starting_an_active_instance_is_refused(example_store: Path, ukedge_home: Path) -> None:
    manager = _manager(example_store, ukedge_home, None)
    instance = manager.create(RunRequest(image="hello-c:1", name="busy"))
    # Another process is starting it: it holds the instance's operation lock.
    with holding(Path(instance.workdir)):
        manager.records.update(
            instance.id,
            lambda i: i.model_copy(update={"state": InstanceState.STARTING, "started_at": 1.0}),
        )
        assert manager.get("busy").state is InstanceState.STARTING, "not taken for abandoned"
        with pytest.raises(InstanceError, match="busy is already starting"):
            manager.start("busy")


def test_a_start_abandoned_by_a_dead_process_fails_and_its_policy_applies(
    example_store: Path, ukedge_home: Path
) -> None:
    """The starter died (kill -9) after recording "starting", before any machine ran: the next
    read (a restarted agent's first supervise pass) fails the run at once, whatever its age,
    and the restart policy schedules a new start; the ghost holds no capacity meanwhile."""
    manager = _manager(example_store, ukedge_home, Capacity(64 * MIB, 2))
    instance = manager.create(
        RunRequest(image="hello-c:1", name="orphan", restart=parse_restart_policy("always"))
    )

    def abandoned(i: Instance) -> Instance:
        return i.model_copy(
            update={"state": InstanceState.STARTING, "started_at": time.time(), "runs": 1}
        )

    manager.records.update(instance.id, abandoned)
    found = manager.get("orphan")
    assert found.state is InstanceState.FAILED
    assert "died while starting" in (found.error or "")
    assert found.restart_at is not None, "the restart policy applies to the failed run"
    assert manager.committed().memory_bytes == 32 * MIB, "held while a restart is due"
    manager.stop("orphan")
    assert manager.committed().memory_bytes == 0


def test_a_restart_that_cannot_start_backs_off_instead_of_spinning(
    example_store: Path, ukedge_home: Path
) -> None:
    manager = _manager(example_store, ukedge_home, None)
    instance = manager.create(
        RunRequest(image="hello-c:1", name="gone", restart=parse_restart_policy("always"))
    )

    def image_removed_and_restart_due(i: Instance) -> Instance:
        return i.model_copy(
            update={
                "state": InstanceState.EXITED,
                "exit_code": 1,
                "image_digest": "sha256:" + "e" * 64,
                "restart_at": time.time() - 1,
                # The doubled back-off (40 s) outlasts any stall of this machine between the
                # two passes, so "not due yet" holds however slowly they run.
                "restart_delay_s": 20.0,
            }
        )

    manager.records.update(instance.id, image_removed_and_restart_due)
    manager.supervise()
    after = manager.get("gone")
    assert after.state is InstanceState.EXITED and after.runs == 0
    assert "no such image" in (after.error or "")
    assert after.restart_delay_s == pytest.approx(40.0)
    assert after.restart_at is not None and after.restart_at > time.time()
    manager.supervise()
    assert manager.get("gone").restart_delay_s == pytest.approx(40.0), "not due yet: untouched"
    manager.stop("gone")
    assert manager.get("gone").restart_at is None, "a user stop cancels the pending restart"


def test_directories_of_cut_short_removes_are_swept_and_nothing_else(
    example_store: Path, ukedge_home: Path
) -> None:
    manager = _manager(example_store, ukedge_home, None)
    kept = manager.create(RunRequest(image="hello-c:1", name="kept"))
    (Path(kept.workdir) / "vm").mkdir()
    removed = manager.root / ("a" * 32)  # its record went, the process died before rmtree
    being_created = manager.root / ("b" * 32)  # another process made it, its record comes next
    being_removed = manager.root / ("c" * 32)  # another process is removing it now
    for path in (removed, being_removed):
        (path / "vm").mkdir(parents=True)
    being_created.mkdir()
    with holding(being_removed):
        assert manager.sweep_removed_leftovers() == 1
    assert not removed.exists()
    assert being_created.exists() and being_removed.exists() and Path(kept.workdir).exists()
