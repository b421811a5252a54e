"""Lifecycle logic that needs no VM: health transitions, and every run's console read as one
stream (offsets stay valid while a restart moves the current console aside)."""

from __future__ import annotations

from pathlib import Path

from ukedge.host import HealthStatus
from ukedge.host.instances._console import (
    earlier_consoles,
    keep_previous_run,
    read_console,
    read_results,
)
from ukedge.host.instances._health import next_health


def test_health_passes_at_once_and_fails_after_retries() -> None:
    status, failures = HealthStatus.STARTING, 0
    status, failures = next_health(status, failures, passed=False, retries=3, in_start_period=False)
    assert (status, failures) == (HealthStatus.STARTING, 1)
    status, failures = next_health(status, failures, passed=True, retries=3, in_start_period=False)
    assert (status, failures) == (HealthStatus.HEALTHY, 0)
    for expected in (HealthStatus.HEALTHY, HealthStatus.HEALTHY, HealthStatus.UNHEALTHY):
        status, failures = next_health(
            status, failures, passed=False, retries=3, in_start_period=False
        )
        assert status is expected
    assert failures == 3
    status, failures = next_health(status, failures, passed=True, retries=3, in_start_period=False)
    assert (status, failures) == (HealthStatus.HEALTHY, 0)


def test_failures_in_the_start_period_do_not_count_until_the_first_pass() -> None:
    status, failures = HealthStatus.STARTING, 0
    for _ in range(10):
        status, failures = next_health(
            status, failures, passed=False, retries=1, in_start_period=True
        )
    assert (status, failures) == (HealthStatus.STARTING, 0)
    status, _ = next_health(status, 0, passed=True, retries=1, in_start_period=True)
    status, _ = next_health(status, 0, passed=False, retries=1, in_start_period=True)
    assert status is HealthStatus.UNHEALTHY, "once healthy, the start period is over"


def _drain(workdir: Path, offset: int) -> tuple[bytes, int]:
    data = b"".join(read_console(workdir, offset))
    return data, offset + len(data)


def test_console_of_every_run_is_one_stream(tmp_path: Path) -> None:
    vm = tmp_path / "vm"
    vm.mkdir()
    console = vm / "console.log"
    console.write_bytes(b"run one\n")
    (vm / "qemu.log").write_text("qemu one\n")
    seen, offset = _drain(tmp_path, 0)
    assert seen == b"run one\n"
    with console.open("ab") as f:
        f.write(b"exit 3\n")
    keep_previous_run(tmp_path)
    assert not console.exists()
    assert [p.name for p in earlier_consoles(tmp_path)] == ["console.000001.log"]
    assert (tmp_path / "logs" / "qemu.000001.log").read_text() == "qemu one\n"
    more, offset = _drain(tmp_path, offset)
    assert more == b"exit 3\n", "the rest of the moved run, nothing twice"
    console.write_bytes(b"run two\n")
    more, offset = _drain(tmp_path, offset)
    assert more == b"run two\n"
    keep_previous_run(tmp_path)
    console.write_bytes(b"run three\n")
    assert [p.name for p in earlier_consoles(tmp_path)] == [
        "console.000001.log",
        "console.000002.log",
    ]
    everything, end = _drain(tmp_path, 0)
    assert everything == b"run one\nexit 3\nrun two\nrun three\n"
    assert _drain(tmp_path, offset)[0] == b"run three\n"
    assert _drain(tmp_path, 10)[0] == everything[10:], "an offset inside an earlier run"
    assert _drain(tmp_path, end)[0] == b""


def test_a_cut_results_line_is_ended_before_the_next_run(tmp_path: Path) -> None:
    vm = tmp_path / "vm"
    vm.mkdir()
    results = vm / "results.jsonl"
    results.write_bytes(b'{"a": 1}\n{"cut')
    keep_previous_run(tmp_path)
    assert results.read_bytes() == b'{"a": 1}\n{"cut\n'
    keep_previous_run(tmp_path)
    assert results.read_bytes() == b'{"a": 1}\n{"cut\n', "a whole last line stays as it is"
    assert b"".join(read_results(tmp_path, 9)) == b'{"cut\n'
    empty = tmp_path / "other"
    (empty / "vm").mkdir(parents=True)
    (empty / "vm" / "results.jsonl").touch()
    keep_previous_run(empty)
    assert (empty / "vm" / "results.jsonl").read_bytes() == b""


def test_an_unchecked_instance_found_by_a_supervisor_is_probed_as_a_starting_one() -> None:
    """A daemonless instance's health is "unchecked"; an agent on the same store probes it."""
    in_period = next_health(
        HealthStatus.UNCHECKED, 0, passed=False, retries=1, in_start_period=True
    )
    assert in_period == (HealthStatus.STARTING, 0)
    passed = next_health(HealthStatus.UNCHECKED, 0, passed=True, retries=1, in_start_period=False)
    assert passed == (HealthStatus.HEALTHY, 0)
