"""The backend contract's value types: validation and their state-file round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge import vmm
from ukedge.errors import UsageError
from ukedge.ports import PortMapping
from ukedge.vmm import MachineSpec, MachineState


def test_spec_round_trips_through_json(tmp_path: Path) -> None:
    spec = MachineSpec(
        "m1",
        kernel=tmp_path / "k",
        workdir=tmp_path / "w",
        initrds=[tmp_path / "a", tmp_path / "b"],
        cmdline="console=ttyS0",
        memory_mib=80,
        vcpus=2,
        ports=[PortMapping(host_port=8080, guest_port=80)],
        restore_from=tmp_path / "snap",
        hostname="edge-7",
    )
    assert MachineSpec.from_json(spec.to_json()) == spec
    assert spec.initrds == (tmp_path / "a", tmp_path / "b")
    waiting = MachineSpec("m2", kernel=tmp_path / "k", workdir=tmp_path / "w", incoming=True)
    assert MachineSpec.from_json(waiting.to_json()).incoming


@pytest.mark.parametrize(
    "kw",
    [
        {"machine_id": ""},
        {"machine_id": "a b"},
        {"machine_id": "../x"},
        {"memory_mib": 8},
        {"vcpus": 0},
        {"hostname": "two words"},
        {"hostname": ""},
        {
            "ports": [
                PortMapping(host_port=80, guest_port=80),
                PortMapping(host_port=80, guest_port=81),
            ]
        },
    ],
)
def test_bad_spec_is_usage_error(tmp_path: Path, kw: dict[str, object]) -> None:
    base: dict[str, object] = {"machine_id": "m", "kernel": tmp_path / "k", "workdir": tmp_path}
    base.update(kw)
    with pytest.raises(UsageError):
        MachineSpec(**base)  # type: ignore[arg-type]


def test_final_states() -> None:
    assert {s for s in MachineState if s.final} == {MachineState.EXITED, MachineState.FAILED}


def test_create_picks_backend_by_name() -> None:
    backend = vmm.create("qemu", {"accel": "tcg"})
    assert backend.name == "qemu"
    assert isinstance(backend, vmm.MachineBackend)
    assert vmm.backends() == ["qemu"]


def test_create_rejects_unknown_backend_and_option() -> None:
    with pytest.raises(UsageError, match="unknown VM backend 'firecracker'"):
        vmm.create("firecracker")
    with pytest.raises(UsageError, match="bad QEMU backend option"):
        vmm.create("qemu", {"turbo": True})
