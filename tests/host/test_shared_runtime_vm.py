"""The shared read-only runtime (issue 15 item 1): a python image's runtime layer served from an
erofs image on virtio-pmem (mounted with DAX) or virtio-blk, booted, prewarmed and cloned. Real
VMs; the guest itself reports what it mounted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kit.manager import instance_manager, remove_all
from kit.net import free_port
from kit.probe import build_probe, probe_json, sha256_file
from ukedge.errors import UsageError
from ukedge.host import InstanceManager, RunRequest, parse_port_mapping
from ukedge.host.instances._console import machine_paths
from ukedge.host.instances._plan import machine_spec

pytestmark = pytest.mark.vm

#: Answers what the guest mounted and how much of its RAM the page cache holds.
ANSWER = """
import json


def meminfo(key):
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])


def answer(path):
    with open("/proc/mounts") as fh:
        mounts = fh.read().splitlines()
    return json.dumps({"mounts": mounts, "cached_kib": meminfo("Cached")}).encode()
"""


@pytest.fixture(scope="module")
def probe_image(example_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_probe(example_store, tmp_path_factory.mktemp("rt-probe"), "rt-probe:1", ANSWER)


def _manager(store: Path, root: Path, bus: str) -> InstanceManager:
    return instance_manager(root, store, disk_bus=bus, shared_runtime=True)


@pytest.fixture(params=["pmem", "blk"])
def shared(
    request: pytest.FixtureRequest, example_store: Path, ukedge_home: Path
) -> Iterator[InstanceManager]:
    mgr = _manager(example_store, ukedge_home / f"instances-{request.param}", request.param)
    yield mgr
    remove_all(mgr)


def _probe(port: int) -> dict[str, object]:
    data: dict[str, object] = probe_json(port)
    return data


def _runtime_mounts(seen: dict[str, object]) -> list[list[str]]:
    mounts = seen["mounts"]
    assert isinstance(mounts, list)
    return [line.split() for line in mounts if line.split()[2] == "erofs"]


def _machine(mgr: InstanceManager, instance_id: str) -> Any:
    return mgr.backend.attach(machine_paths(Path(mgr.get(instance_id).workdir)).workdir)


def _disk(mgr: InstanceManager, instance_id: str) -> Path:
    disk = _machine(mgr, instance_id).spec.disk
    assert isinstance(disk, Path)
    return disk


def test_a_booted_guest_runs_python_from_the_shared_image(
    shared: InstanceManager, probe_image: str
) -> None:
    bus = shared.backend.options.disk_bus  # type: ignore[attr-defined]
    port = free_port()
    instance = shared.run(
        RunRequest(image=probe_image, cold=True, ports=[parse_port_mapping(f"{port}:8080")])
    )
    seen = _probe(port)
    erofs = _runtime_mounts(seen)
    # The image on its device, and each runtime directory bound from it (same superblock).
    device = "/dev/pmem0" if bus == "pmem" else "/dev/vda"
    assert {m[0] for m in erofs} == {device}
    assert {m[1] for m in erofs} >= {"/ukedge/runtime", "/lib", "/usr"}
    for m in erofs:
        assert "ro" in m[3].split(",")
        # DAX on pmem: the guest's page cache holds no copy of the runtime's files.
        assert ("dax=always" in m[3]) == (bus == "pmem")
    disk = _disk(shared, instance.id)
    assert disk.name.endswith(".erofs")
    machine = _machine(shared, instance.id)
    assert ("virtio-pmem-pci" in " ".join(machine.argv)) == (bus == "pmem")
    # Init says so on the console when it asked for DAX and did not get it.
    assert "without DAX" not in machine.console_path.read_text()
    # The boot archive stands in for the runtime layer: a fraction of its 17 MB.
    assert machine_paths(Path(instance.workdir)).initrd.stat().st_size < 4 << 20


def test_clones_of_a_template_share_the_image_and_never_write_it(
    shared: InstanceManager, probe_image: str
) -> None:
    snapshot = shared.prewarm(RunRequest(image=probe_image))
    assert (snapshot / "ram").is_file()
    ports = [free_port(), free_port()]
    clones = [
        shared.run(RunRequest(image=probe_image, ports=[parse_port_mapping(f"{p}:8080")]))
        for p in ports
    ]
    assert all(shared.get(c.id).restored for c in clones)
    disks = {_disk(shared, c.id) for c in clones}
    assert len(disks) == 1  # one host file for every instance of the runtime
    (disk,) = disks
    before = sha256_file(disk)
    for port in ports:
        seen = _probe(port)
        assert {m[1] for m in _runtime_mounts(seen)} >= {"/lib", "/usr"}
    if shared.backend.options.disk_bus == "pmem":  # type: ignore[attr-defined]
        # Both QEMUs map the same file (shared, read-only): the host holds one copy of it.
        for clone in clones:
            pid = shared.get(clone.id).pid
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert any(str(disk) in line and " r--s " in line for line in maps.splitlines())
    assert sha256_file(disk) == before


def test_a_snapshot_of_a_booted_disk_machine_restores_only_with_the_same_disk(
    example_store: Path, ukedge_home: Path, probe_image: str
) -> None:
    """The image is not in the snapshot: a restore without it (or another one) is refused
    before QEMU would fail late; the same image restores."""
    shared = _manager(example_store, ukedge_home / "instances-fp", "pmem")
    try:
        snapshot = shared.prewarm(RunRequest(image=probe_image))
        plain = instance_manager(ukedge_home / "instances-plain", example_store)
        plan = plain._plan(probe_image, RunRequest(image=probe_image))
        workdir = ukedge_home / "fp-plain"
        workdir.mkdir()
        spec = machine_spec(plan, "fp-plain", workdir, [], snapshot)
        with pytest.raises(UsageError, match="disk"):
            plain.backend.start(spec)
    finally:
        remove_all(shared)
