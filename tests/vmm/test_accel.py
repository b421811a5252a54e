"""The accelerator probe: override, per-host cache and its key, and the probe guest itself."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from ukedge import vmm
from ukedge.errors import UsageError
from ukedge.vmm import _accel


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UKEDGE_CACHE", str(tmp_path))
    monkeypatch.delenv("UKEDGE_ACCEL", raising=False)
    return tmp_path / "accel.json"


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count probe runs; the probe answers 'KVM works' so no real KVM is touched."""
    calls: list[str] = []

    def fake_run(
        binary: str,
        accel: str,
        timeout: float = 0,
        cpu: str | None = None,
        machine: str = "x86_64",
    ) -> tuple[bool, str]:
        calls.append(accel)
        return True, "test"

    monkeypatch.setattr(_accel, "run_probe", fake_run)
    monkeypatch.setattr(_accel, "_kvm_usable", lambda: None)
    return calls


@pytest.mark.parametrize("value", ["kvm", "tcg", "KVM"])
def test_env_override_wins_without_probing(
    cache: Path, probes: list[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("UKEDGE_ACCEL", value)
    verdict = vmm.probe_accelerator()
    assert verdict.accel == value.lower()
    assert verdict.source == "env"
    assert probes == []
    assert not cache.exists()


def test_bad_env_override_is_usage_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UKEDGE_ACCEL", "hvf")
    with pytest.raises(UsageError, match="UKEDGE_ACCEL"):
        vmm.probe_accelerator()


def test_verdict_is_cached_per_host(cache: Path, probes: list[str]) -> None:
    first = vmm.probe_accelerator()
    assert (first.accel, first.source) == ("kvm", "probe")
    assert first.notice is None
    second = vmm.probe_accelerator()
    assert (second.accel, second.source) == ("kvm", "cache")
    assert probes == ["kvm"]
    assert json.loads(cache.read_text())["key"] == _accel.host_key()


def test_force_reprobes(cache: Path, probes: list[str]) -> None:
    vmm.probe_accelerator()
    assert vmm.probe_accelerator(force=True).source == "probe"
    assert probes == ["kvm", "kvm"]


def test_changed_host_key_invalidates_cache(cache: Path, probes: list[str]) -> None:
    vmm.probe_accelerator()
    data = json.loads(cache.read_text())
    data["key"]["kernel_release"] = "0.0.0-other"
    cache.write_text(json.dumps(data))
    assert vmm.probe_accelerator().source == "probe"
    assert probes == ["kvm", "kvm"]


def test_corrupt_cache_is_ignored(cache: Path, probes: list[str]) -> None:
    cache.write_text("{not json")
    assert vmm.probe_accelerator().source == "probe"


def test_unusable_kvm_gives_tcg_with_notice(
    cache: Path, probes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_accel, "_kvm_usable", lambda: "/dev/kvm does not exist")
    verdict = vmm.probe_accelerator()
    assert verdict.accel == "tcg"
    assert probes == []
    assert verdict.notice is not None
    assert "\n" not in verdict.notice
    assert "/dev/kvm does not exist" in verdict.notice


def test_host_key_tracks_kvm_access() -> None:
    key = _accel.host_key()
    assert key["kernel_release"] == os.uname().release
    assert key["kvm"]["exists"] == Path("/dev/kvm").exists()
    assert Path(key["qemu"]["path"]).is_absolute()


def test_probe_firmware_layout() -> None:
    image = _accel.probe_firmware()
    assert len(image) == 0x10000
    assert image[0xFFF0:0xFFF5] == bytes([0xEA, 0, 0, 0, 0xF0])  # reset vector: ljmp F000:0000
    assert image[0] == 0xFA  # cli


def test_probe_guest_runs_under_tcg() -> None:
    """The probe guest really reaches protected mode and reports (real QEMU, no KVM needed)."""
    works, why = _accel.run_probe("qemu-system-x86_64", "tcg")
    assert works, why


def test_arm64_probe_guest_powers_off_under_tcg() -> None:
    """The aarch64 probe (PSCI SYSTEM_OFF through hvc) really ends QEMU's virt machine."""
    if shutil.which("qemu-system-aarch64") is None:
        pytest.skip("needs qemu-system-aarch64 (Debian: qemu-system-arm)")
    works, why = _accel.run_probe("qemu-system-aarch64", "tcg", timeout=30, machine="aarch64")
    assert works, why


def test_a_guest_of_another_architecture_is_emulated_without_probing(
    cache: Path, probes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_accel, "_host_machine", lambda: "x86_64")
    monkeypatch.setenv("UKEDGE_ACCEL", "kvm")  # not even a forced KVM runs another architecture
    verdict = vmm.accelerator_for("aarch64")
    assert verdict.accel == "tcg" and verdict.source == "architecture"
    assert "aarch64" in verdict.reason and "x86_64" in verdict.reason
    assert probes == []
    assert vmm.accelerator_for("x86_64").accel == "kvm"  # the host's own: the override holds


def test_qemu_version() -> None:
    assert vmm.qemu_version().startswith("QEMU emulator version ")


#: Far above the probe timeouts below: a probe still running then ignored its timeout.
_PROBE_CEILING_S = 120.0


def _probe_kvm(timeout: float, cpu: str | None = None) -> tuple[bool, str]:
    """``run_probe`` in a thread, so a probe that ignores its timeout fails the test instead
    of hanging the suite."""
    answer: list[tuple[bool, str]] = []
    thread = threading.Thread(
        target=lambda: answer.append(
            _accel.run_probe("qemu-system-x86_64", "kvm", timeout=timeout, cpu=cpu)
        ),
        daemon=True,
    )
    thread.start()
    thread.join(_PROBE_CEILING_S)
    assert answer, f"the probe did not answer in {_PROBE_CEILING_S:g} s despite timeout={timeout}"
    return answer[0]


@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="needs /dev/kvm")
def test_kvm_probe_answers_within_its_timeout() -> None:
    """Whatever KVM does here (works, fails, hangs as nested KVM does), the probe answers."""
    works, why = _probe_kvm(timeout=1.5)
    assert why
    if not works:
        assert "KVM test VM" in why
        if "hung" in why:
            assert "hung for 1.5 s" in why, "a hang must be cut at the timeout given"


@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="needs /dev/kvm")
def test_a_hanging_kvm_guest_is_killed_at_the_timeout() -> None:
    """With the default CPU model nested KVM here hangs in protected mode: the probe must
    kill QEMU at its timeout (elsewhere KVM may simply work)."""
    works, why = _probe_kvm(timeout=1.0, cpu="qemu64")
    if not works:
        assert "hung for 1 s" in why or "failed" in why, why
    assert not _probe_processes(), "the probe left a QEMU running"


def _probe_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"ukedge-probe-" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
