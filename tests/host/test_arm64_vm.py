"""The example images built for linux/arm64 run on this node, emulated (qemu-system-aarch64
``virt`` under TCG on an x86_64 host), and keep the contract the x86_64 builds keep
(``kit.example_checks``): console, arguments and environment, exit status, results and control
ports, network, RNG, clock. One session build of each image and one arm64 kernel serve them.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.example_checks import check_hello, check_sensor_agg
from kit.host import wait_http
from kit.net import free_port
from ukedge import paths, vmm
from ukedge.host import (
    InstanceEvent,
    InstanceManager,
    RunRequest,
    UnpackedLayers,
    parse_port_mapping,
)
from ukedge.host.instances._console import machine_paths
from ukedge.image import ImageStore

pytestmark = [pytest.mark.vm, pytest.mark.foreign_arch]

#: arm64 under TCG runs the Python app several times slower than x86_64 under TCG.
_CEILING = 180.0


@pytest.fixture
def arm64_manager(arm64_example_store: Path, ukedge_home: Path) -> Iterator[InstanceManager]:
    mgr = InstanceManager(
        ukedge_home / "instances",
        ImageStore(arm64_example_store),
        vmm.create("qemu"),
        UnpackedLayers(paths.cache_dir() / "unpacked"),
    )
    yield mgr
    for instance in mgr.list():
        mgr.remove(instance.id, force=True)


def test_arm64_hello_c_keeps_the_guest_contract(arm64_manager: InstanceManager) -> None:
    events: list[InstanceEvent] = []
    arm64_manager.listeners.append(events.append)
    final = check_hello(arm64_manager, timeout=_CEILING)
    machine = arm64_manager.backend.attach(machine_paths(Path(final.workdir)).workdir)
    assert machine.spec.architecture == "aarch64"
    console = arm64_manager.console_path(final).read_text(errors="replace")
    assert "Exec format error" not in console
    if platform.machine() != "aarch64":
        emulated = [e for e in events if e.action == "emulated"]
        assert emulated and "aarch64" in (emulated[0].detail or ""), events


def test_arm64_sensor_agg_keeps_the_guest_contract(arm64_manager: InstanceManager) -> None:
    check_sensor_agg(arm64_manager, timeout=_CEILING)


def test_arm64_prewarm_snapshot_resumes_ready(arm64_manager: InstanceManager) -> None:
    """Prewarm snapshots work on virt too (its RAM block is the copy-on-write template's)."""
    snapshot = arm64_manager.prewarm(RunRequest(image="sensor-agg:1"), timeout=_CEILING * 2)
    assert (snapshot / "vmstate").is_file()
    port = free_port()
    instance = arm64_manager.run(
        RunRequest(image="sensor-agg:1", ports=[parse_port_mapping(f"{port}:8080")])
    )
    assert arm64_manager.get(instance.id).restored
    assert wait_http(f"http://127.0.0.1:{port}/healthz", timeout=_CEILING).status_code == 200
    # The app started before the snapshot; its start-up line shows once in the clone's stream.
    console = b"".join(arm64_manager.follow(instance.id, follow=False))
    assert console.count(b"sensor-agg listening") == 1, console
