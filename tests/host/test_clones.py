"""Clones of one prewarm snapshot are separate machines: their own app random state (the python
runtime reseeds on resume) and hostname; they keep the snapshot's MAC address (user-mode
networking: see docs/image-format.md). Real VMs, a real python image."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kit.net import free_port
from kit.probe import build_probe, probe_json, sha256_file
from ukedge.errors import InstanceError
from ukedge.host import InstanceManager, RunRequest, parse_port_mapping
from ukedge.vmm._qemu_argv import guest_mac

pytestmark = pytest.mark.vm

#: Draws from random at import (before the snapshot) and answers what a clone must own.
ANSWER = """
import json
import random
import socket

FIRST = random.random()


def mac():
    with open("/sys/class/net/eth0/address") as fh:
        return fh.read().strip()


def answer(path):
    if path == "/identity":
        return json.dumps(
            {"first": FIRST, "random": random.random(), "mac": mac(),
             "hostname": socket.gethostname()}
        ).encode()
    return b"ok"
"""


def _build(store: Path, root: Path, tag: str, app_lines: str = "") -> str:
    """The probe app with ``app_lines`` added to its Ukfile's [app] section, tagged ``tag``."""
    return build_probe(store, root, tag, ANSWER, health="/healthz", app_lines=app_lines)


@pytest.fixture(scope="module")
def probe_image(example_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _build(example_store, tmp_path_factory.mktemp("clone-probe"), "clone-probe:1")


def _identity(port: int) -> dict[str, object]:
    data: dict[str, object] = probe_json(port, "/identity", ready="/healthz")
    return data


def test_clones_of_one_snapshot_have_their_own_random_and_hostname_and_the_snapshots_mac(
    manager: InstanceManager, probe_image: str
) -> None:
    """Both clones map the template's RAM file privately: it is the same file after they ran,
    answered and wrote their own memory (reseeding, serving, the identity they hold)."""
    snapshot = manager.prewarm(RunRequest(image=probe_image))
    template = snapshot / "ram"
    assert template.is_file()
    # The state stream carries devices only: the RAM is in the template, not copied into it.
    assert (snapshot / "vmstate").stat().st_size < template.stat().st_size // 8
    before = sha256_file(template)
    ports = [free_port(), free_port()]
    clones = [
        manager.run(
            RunRequest(
                image=probe_image, name=f"clone-{i}", ports=[parse_port_mapping(f"{p}:8080")]
            )
        )
        for i, p in enumerate(ports)
    ]
    assert all(manager.get(c.id).restored for c in clones)
    seen = [_identity(p) for p in ports]
    # Drawn before the snapshot: the same in both (what the app made of it is its own).
    assert seen[0]["first"] == seen[1]["first"]
    # Drawn after the resume: the runtime reseeded random in each clone.
    assert seen[0]["random"] != seen[1]["random"]
    for clone, identity in zip(clones, seen, strict=True):
        assert identity["hostname"] == clone.name
        assert identity["mac"] != guest_mac(clone.id)
    # The user network learns this address as the clone resumes: changing it lost connections.
    assert seen[0]["mac"] == seen[1]["mac"]
    for port in ports:  # more work in each clone before the template is read again
        for _ in range(5):
            _identity(port)
    assert sha256_file(template) == before


def test_removing_and_remaking_a_template_leaves_running_clones_alone(
    manager: InstanceManager, probe_image: str
) -> None:
    """A clone maps the template's RAM file: deleting the snapshot only unlinks it (the pages
    stay until the last clone ends), and a new prewarm writes a new file, never the old one."""
    snapshot = manager.prewarm(RunRequest(image=probe_image))
    port = free_port()
    clone = manager.run(RunRequest(image=probe_image, ports=[parse_port_mapping(f"{port}:8080")]))
    assert manager.get(clone.id).restored
    first = _identity(port)
    old_inode = (snapshot / "ram").stat().st_ino
    shutil.rmtree(snapshot)
    assert _identity(port)["first"] == first["first"]
    again = manager.prewarm(RunRequest(image=probe_image))
    assert (again / "ram").stat().st_ino != old_inode
    port2 = free_port()
    newer = manager.run(RunRequest(image=probe_image, ports=[parse_port_mapping(f"{port2}:8080")]))
    assert manager.get(newer.id).restored
    assert _identity(port2)["hostname"] == newer.name
    assert _identity(port)["hostname"] == clone.name


def test_a_booted_instance_has_its_own_mac_and_hostname_unless_the_run_names_one(
    manager: InstanceManager, probe_image: str
) -> None:
    port, named_port = free_port(), free_port()
    plain = manager.run(
        RunRequest(image=probe_image, cold=True, ports=[parse_port_mapping(f"{port}:8080")])
    )
    named = manager.run(
        RunRequest(
            image=probe_image,
            cold=True,
            hostname="edge-7",
            ports=[parse_port_mapping(f"{named_port}:8080")],
        )
    )
    assert not manager.get(plain.id).restored
    first, second = _identity(port), _identity(named_port)
    assert first["hostname"] == plain.name and first["mac"] == guest_mac(plain.id)
    assert second["hostname"] == "edge-7" and second["mac"] == guest_mac(named.id)


def test_pre_app_snapshot_is_taken_before_the_app_starts(
    manager: InstanceManager, example_store: Path, tmp_path: Path
) -> None:
    """snapshot = "pre-app": even what the app draws as it starts differs between clones."""
    image = _build(example_store, tmp_path, "clone-probe:pre-app", 'snapshot = "pre-app"\n')
    snapshot = manager.prewarm(RunRequest(image=image))
    assert (snapshot / "vmstate").is_file()
    ports = [free_port(), free_port()]
    clones = [
        manager.run(RunRequest(image=image, ports=[parse_port_mapping(f"{p}:8080")])) for p in ports
    ]
    assert all(manager.get(c.id).restored for c in clones)
    first, second = (_identity(p) for p in ports)
    assert first["first"] != second["first"]
    assert first["hostname"] == clones[0].name and second["hostname"] == clones[1].name


def test_snapshot_off_and_a_fixed_hostname(
    manager: InstanceManager, example_store: Path, tmp_path: Path
) -> None:
    lines = 'snapshot = "off"\nhostname = "fixed-1"\n'
    image = _build(example_store, tmp_path, "clone-probe:off", lines)
    with pytest.raises(InstanceError, match='snapshot = "off"'):
        manager.prewarm(RunRequest(image=image))
    port = free_port()
    instance = manager.run(RunRequest(image=image, ports=[parse_port_mapping(f"{port}:8080")]))
    assert not manager.get(instance.id).restored
    assert _identity(port)["hostname"] == "fixed-1"
