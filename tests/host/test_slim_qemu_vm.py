"""The QEMU built with only what the guests use (``make qemu-slim``, issue 15 item 3): every
boot path of an x86_64 node runs on it, and it maps less into each instance. Real VMs on the
build `make test` makes; a developer without it gets a skip that says how to build it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kit.manager import instance_manager, remove_all
from kit.net import free_port
from kit.probe import probe_json
from ukedge import paths, vmm
from ukedge.host import InstanceManager, RunRequest, parse_port_mapping

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def slim_binary() -> Path:
    binary = paths.slim_qemu()
    if not binary.is_file():
        pytest.skip(f"no slim QEMU at {binary}: `make qemu-slim` builds it (`make test` does)")
    return binary


@pytest.fixture(params=["initramfs", "pmem"])
def slim(
    request: pytest.FixtureRequest, slim_binary: Path, example_store: Path, ukedge_home: Path
) -> Iterator[InstanceManager]:
    shared = request.param == "pmem"
    manager = instance_manager(
        ukedge_home / f"instances-{request.param}",
        example_store,
        disk_bus="pmem" if shared else None,
        shared_runtime=shared,
        binary=slim_binary,
    )
    yield manager
    remove_all(manager)


def _libraries(binary: str) -> int:
    listed = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return len(listed.splitlines())


def test_the_slim_build_links_a_fraction_of_debians_libraries(slim_binary: Path) -> None:
    found = shutil.which(vmm.qemu_binary("x86_64"))
    assert found is not None
    assert _libraries(str(slim_binary)) * 3 < _libraries(found)
    # The emulated arm64 guests of the node find their QEMU beside it (Debian's).
    assert (slim_binary.parent / "qemu-system-aarch64").exists()


def _served(port: int) -> int:
    """The app took a reading and counts it: networking, Python and the results port work."""
    probe_json(port, "/healthz", ready="/healthz")
    httpx.post(f"http://127.0.0.1:{port}/readings", json={"sensor": "s", "value": 1.0}, timeout=30)
    count: int = probe_json(port, "/healthz")["accepted"]
    return count


def test_a_guest_boots_prewarms_and_clones_on_the_slim_build(
    slim: InstanceManager, slim_binary: Path
) -> None:
    booted_port = free_port()
    booted = slim.run(
        RunRequest(
            image="sensor-agg:1", cold=True, ports=[parse_port_mapping(f"{booted_port}:8080")]
        )
    )
    assert _served(booted_port) == 1
    slim.prewarm(RunRequest(image="sensor-agg:1"))
    port = free_port()
    clone = slim.run(RunRequest(image="sensor-agg:1", ports=[parse_port_mapping(f"{port}:8080")]))
    assert slim.get(clone.id).restored
    assert _served(port) == 1
    for instance in (booted, clone):
        pid = slim.get(instance.id).pid
        assert Path(f"/proc/{pid}/exe").resolve() == slim_binary.resolve()
