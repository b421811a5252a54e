"""Instance lifecycle with real QEMU VMs: start again, restart policies, health, on demand."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kit.host import ukedge_cmd, wait_http
from kit.net import free_port
from ukedge.errors import AdmissionError
from ukedge.host import (
    HealthStatus,
    Instance,
    InstanceEvent,
    InstanceManager,
    InstanceState,
    ResultSpool,
    RunRequest,
    parse_port_mapping,
    parse_restart_policy,
)
from ukedge.host.instances._admission import Capacity

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 120.0


@contextlib.contextmanager
def _supervising(manager: InstanceManager) -> Iterator[None]:
    """The agent's supervisor thread, faster: REST calls race it from the test's thread."""
    halt = threading.Event()

    def loop() -> None:
        while not halt.is_set():
            manager.supervise()
            time.sleep(0.01)

    supervisor = threading.Thread(target=loop)
    supervisor.start()
    try:
        yield
    finally:
        halt.set()
        supervisor.join()


def _supervise_until(
    manager: InstanceManager,
    key: str,
    done: Callable[[Instance], bool],
    timeout: float = BOOT_TIMEOUT,
) -> Instance:
    deadline = time.monotonic() + timeout
    while True:
        manager.supervise()
        instance = manager.get(key)
        if done(instance):
            return instance
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {instance!r}")
        time.sleep(0.05)


def _restarting_control(manager: InstanceManager) -> str:
    """An instance the ``always`` policy keeps restarting: the witness that supervision ran
    long enough for a restart to happen (see :func:`_until_control_restarted`)."""
    manager.run(
        RunRequest(
            image="hello-c:1", name="control", args=["c"], restart=parse_restart_policy("always")
        )
    )
    return "control"


def _until_control_restarted(
    manager: InstanceManager, control: str, past: int, *, supervise: bool = True
) -> None:
    """Supervise (or, with ``supervise=False``, let the supervising thread run) until the
    control has more than ``past`` policy restarts. Its back-off then spans at least the one
    an instance with ``past`` restarts would have waited, so an instance that was not
    restarted meanwhile was not going to be: a wait on an event, not on a clock."""
    deadline = time.monotonic() + BOOT_TIMEOUT * (past + 2)
    while manager.get(control).restart_count <= past:
        assert time.monotonic() < deadline, (
            f"the control was not restarted: {manager.get(control)!r}"
        )
        if supervise:
            manager.supervise()
        time.sleep(0.05)


def _qemus_in(workdir: str) -> list[int]:
    """Pids of live QEMU processes whose command line names ``workdir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"qemu-system" in cmdline and workdir.encode() in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def _console(manager: InstanceManager, key: str) -> str:
    return b"".join(manager.follow(key, follow=False)).decode(errors="replace")


def test_start_again_keeps_console_and_results_of_earlier_runs(
    manager: InstanceManager, tmp_path: Path
) -> None:
    events: list[InstanceEvent] = []
    manager.listeners.append(events.append)
    instance = manager.run(RunRequest(image="hello-c:1", name="twice", args=["edge", "--exit=3"]))
    first = manager.wait("twice", timeout=BOOT_TIMEOUT)
    assert (first.state, first.exit_code, first.runs) == (InstanceState.EXITED, 3, 1)
    spool = ResultSpool(tmp_path / "spool.db")
    results = manager.results_path(first)
    assert spool.ingest_file(instance.id, "node", results) == 1
    first_console = _console(manager, "twice")
    assert first_console.count("Hello, edge!") == 1

    restarted = manager.start("twice")
    assert restarted.state is InstanceState.RUNNING and restarted.runs == 2
    second = manager.wait("twice", timeout=BOOT_TIMEOUT)
    assert (second.state, second.exit_code) == (InstanceState.EXITED, 3)
    console = _console(manager, "twice")
    assert console.startswith(first_console), "the earlier run's output comes first, unchanged"
    assert console.count("Hello, edge!") == 2
    assert len(manager.console_paths(second)) == 2
    # The spool's stored offset stays valid: the second run's line arrives, nothing twice.
    assert spool.ingest_file(instance.id, "node", results) == 1
    lines = [json.loads(r.line) for r in spool.records(instance.id)]
    assert len(lines) == 2
    assert [(e.action, e.state) for e in events] == [
        ("create", InstanceState.CREATED),
        ("starting", InstanceState.STARTING),
        ("start", InstanceState.RUNNING),
        ("die", InstanceState.EXITED),
        ("starting", InstanceState.STARTING),
        ("start", InstanceState.RUNNING),
        ("die", InstanceState.EXITED),
    ]
    assert events[3].exit_code == 3


def test_on_failure_restarts_with_backoff_then_gives_up(manager: InstanceManager) -> None:
    events: list[InstanceEvent] = []
    manager.listeners.append(events.append)
    manager.run(
        RunRequest(
            image="hello-c:1",
            name="crashy",
            args=["loop", "--exit=3"],
            restart=parse_restart_policy("on-failure:2"),
        )
    )
    final = _supervise_until(
        manager,
        "crashy",
        lambda i: not i.state.active and i.restart_count == 2 and i.restart_at is None,
    )
    assert (final.state, final.exit_code, final.runs) == (InstanceState.EXITED, 3, 3)
    assert final.restart_delay_s == pytest.approx(0.2), "0.1 s, then doubled"
    for _ in range(5):  # given up: further passes start nothing
        manager.supervise()
    assert manager.get("crashy").runs == 3
    assert [e.action for e in events].count("restart") == 2
    assert _console(manager, "crashy").count("Hello, loop!") == 3


def test_always_restarts_a_clean_exit_until_the_user_stops_it(manager: InstanceManager) -> None:
    manager.run(
        RunRequest(
            image="hello-c:1", name="again", args=["ok"], restart=parse_restart_policy("always")
        )
    )
    _supervise_until(manager, "again", lambda i: i.restart_count >= 2)
    stopped = manager.stop("again", timeout=5)
    assert stopped.stopped_by_user and stopped.restart_at is None
    runs = stopped.runs
    control = _restarting_control(manager)
    _until_control_restarted(manager, control, past=stopped.restart_count)
    after = manager.get("again")
    assert not after.state.active
    assert after.runs == runs, "a stop asked by the user is never followed by a restart"
    assert after.exit_code in (0, 137, 143)


def test_a_kill_is_reported_and_never_restarted(manager: InstanceManager) -> None:
    events: list[InstanceEvent] = []
    manager.listeners.append(events.append)
    manager.run(
        RunRequest(image="sensor-agg:1", name="victim", restart=parse_restart_policy("always"))
    )
    killed = manager.kill("victim")
    assert (killed.state, killed.exit_code) == (InstanceState.EXITED, 137)
    assert killed.stopped_by_user and killed.restart_at is None
    victim_events = [e for e in events if e.name == "victim"]
    control = _restarting_control(manager)
    _until_control_restarted(manager, control, past=0)
    assert manager.get("victim").runs == 1
    assert [(e.action, e.state, e.previous) for e in victim_events[-2:]] == [
        ("kill", InstanceState.RUNNING, InstanceState.RUNNING),
        ("die", InstanceState.EXITED, InstanceState.RUNNING),
    ]
    assert victim_events[-1].exit_code == 137
    assert [e for e in events if e.name == "victim"] == victim_events, "nothing after the kill"


def test_a_stop_racing_the_restart_loop_leaves_no_machine_running(
    manager: InstanceManager,
) -> None:
    """The agent supervises in one thread while REST calls stop in others."""
    manager.run(
        RunRequest(
            image="hello-c:1", name="race", args=["r"], restart=parse_restart_policy("always")
        )
    )
    control = _restarting_control(manager)
    with _supervising(manager):
        for delay in (0.3, 0.9, 1.7):
            time.sleep(delay)  # lands the stop in a different phase of the restart loop
            stopped = manager.stop("race", timeout=5)
            _until_control_restarted(
                manager, control, past=manager.get(control).restart_count, supervise=False
            )
            assert manager.get("race").runs == stopped.runs, "restarted after a stop"
            instance = manager.get("race")
            assert not instance.state.active, f"restarted after a stop: {instance!r}"
            assert instance.restart_at is None
            assert _qemus_in(instance.workdir) == [], "a machine outlived the stop"
            manager.start("race")
    manager.stop("race", timeout=5)
    assert not manager.get("race").state.active


def test_a_stop_from_another_process_ends_the_restart_loop(
    manager: InstanceManager, cli_home: Path
) -> None:
    """The supervising process and a CLI process share the records; only SQLite serialises."""
    instance = manager.run(
        RunRequest(
            image="hello-c:1", name="race2", args=["r"], restart=parse_restart_policy("always")
        )
    )
    control = _restarting_control(manager)
    with _supervising(manager):
        for delay in (0.1, 0.6, 1.1):
            time.sleep(delay)  # lands the stop in a different phase of the restart loop
            stop = subprocess.run(
                [*ukedge_cmd(), "stop", "-t", "5", "race2"], capture_output=True, text=True
            )
            assert stop.returncode == 0, stop.stderr
            deadline = time.monotonic() + BOOT_TIMEOUT
            while manager.get("race2").state.active:
                assert time.monotonic() < deadline, "a start caught mid-way did not end itself"
                time.sleep(0.1)
            runs = manager.get("race2").runs
            _until_control_restarted(
                manager, control, past=manager.get(control).restart_count, supervise=False
            )
            after = manager.get("race2")
            assert after.runs == runs, f"restarted after a stop: {after!r}"
            assert not after.state.active, f"running after a stop: {after!r}"
            assert after.restart_at is None and after.stopped_by_user
            assert _qemus_in(instance.workdir) == [], "a machine outlived the stop"
            manager.start("race2")


def test_health_is_probed_through_a_loopback_forward(manager: InstanceManager) -> None:
    events: list[InstanceEvent] = []
    manager.listeners.append(events.append)
    instance = manager.run(RunRequest(image="sensor-agg:1", name="probed"))
    assert instance.health is HealthStatus.STARTING
    assert [p.guest_port for p in instance.upstream_ports] == [8080]
    assert instance.upstream_ports[0].host_ip == "127.0.0.1"
    healthy = _supervise_until(manager, "probed", lambda i: i.health is HealthStatus.HEALTHY)
    assert healthy.healthy_at is not None
    host, port = manager.upstream(healthy, 8080)
    assert httpx.get(f"http://{host}:{port}/stats").status_code == 200
    health_events = [e for e in events if e.action == "health_status"]
    assert [e.health for e in health_events] == [HealthStatus.HEALTHY]


def test_unhealthy_app_is_restarted_by_its_policy(manager: InstanceManager) -> None:
    """The app listens on 9090 while its health check probes 8080: it never passes."""
    manager.min_start_period_s = 2.0
    manager.run(
        RunRequest(
            image="sensor-agg:1",
            name="sick",
            env={"PORT": "9090"},
            restart=parse_restart_policy("on-failure:1"),
        )
    )
    restarted = _supervise_until(
        manager, "sick", lambda i: i.restart_count == 1 and i.state is InstanceState.RUNNING
    )
    assert restarted.runs == 2
    earlier = manager.console_paths(restarted)[0]
    assert earlier.exists()
    # The restart was the last one the policy allows: unhealthy again, it is left running.
    sick = _supervise_until(manager, "sick", lambda i: i.health is HealthStatus.UNHEALTHY)
    # Three more failed probes: the manager judged the unhealthy run three more times.
    still = _supervise_until(
        manager, "sick", lambda i: i.health_failures >= sick.health_failures + 3 or i.runs > 2
    )
    assert still.state is InstanceState.RUNNING and still.runs == sick.runs == 2
    assert still.health is HealthStatus.UNHEALTHY


def test_on_demand_instance_gets_loopback_upstreams_and_admission_counts_it(
    manager: InstanceManager,
) -> None:
    manager.capacity = Capacity(memory_allocatable_bytes=160 << 20, cpus=4)
    # Created first, it fits; once the on-demand instance holds 96 MiB, it cannot start.
    other = manager.create(RunRequest(image="sensor-agg:1", name="other", memory_mib=70))
    published = free_port()
    lazy = manager.run(
        RunRequest(
            image="sensor-agg:1",
            name="lazy",
            ports=[parse_port_mapping(f"{published}:8080")],
            on_demand=True,
            idle_timeout_s=1,
        )
    )
    assert lazy.state is InstanceState.CREATED
    started = manager.start("lazy")
    assert started.state is InstanceState.RUNNING
    host, port = manager.upstream(started, 8080)
    assert (host, port != published) == ("127.0.0.1", True)
    assert wait_http(f"http://{host}:{port}/healthz").status_code == 200
    argv = manager.backend.attach(Path(started.workdir) / "vm").argv  # type: ignore[attr-defined]
    assert f":{published}-" not in " ".join(argv), "the proxy owns the published port"
    with pytest.raises(AdmissionError, match="node cannot take instance other"):
        manager.start(other.id)
    manager.stop("lazy", timeout=10)
    manager.supervise()
    idle = manager.get("lazy")
    assert not idle.state.active and idle.restart_at is None
    with pytest.raises(AdmissionError):
        manager.start(other.id)  # scaled to zero, the on-demand instance keeps its room
    again = manager.start("lazy")
    assert again.runs == 2
    host, port = manager.upstream(again, 8080)
    assert wait_http(f"http://{host}:{port}/healthz").status_code == 200
