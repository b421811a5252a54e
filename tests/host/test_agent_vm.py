"""The host agent with real VMs and a real hub: pull, run, kill -9 and re-adopt, admission,
results through a sink that was down, the remote CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kit.agent import push_examples, running_agent
from kit.host import ukedge_cmd, wait_http
from kit.hub import RunningHub, start_hub
from kit.mqtt import MosquittoBroker, Subscriber, needs_mosquitto
from kit.net import free_port
from ukedge.errors import AdmissionError, AgentError, InstanceError
from ukedge.faults import CRASH_POINT_ENV
from ukedge.host import InstanceState, PortMapping, run_request
from ukedge.image import ImageStore
from ukedge.registry import BlobOutcome

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, example_store: Path) -> Iterator[str]:
    running: RunningHub = start_hub(tmp_path_factory.mktemp("hub"))
    addr = running.url.removeprefix("http://")
    push_examples(ImageStore(example_store), addr, "hello-c:1", "sensor-agg:1")
    yield addr
    running.stop()


class _Recorder:
    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    def start(self, digest: str, label: str, total: int) -> None:
        pass

    def update(self, digest: str, completed: int) -> None:
        pass

    def finish(self, digest: str, outcome: BlobOutcome) -> None:
        self.outcomes[digest] = str(outcome)


def _sensor(name: str, port: int, **extra: Any) -> Any:
    return run_request(
        image="sensor-agg:1",
        name=name,
        ports=[PortMapping(host_port=port, guest_port=8080)],
        **extra,
    )


def test_pull_run_three_then_kill9_and_readopt(tmp_path: Path, hub: str) -> None:
    with running_agent(tmp_path / "data", "--hub", hub) as agent:
        client = agent.client()
        progress = _Recorder()
        pulled = client.pull("sensor-agg:1", progress=progress)
        assert pulled.ref == f"{hub}/sensor-agg:1"
        assert set(progress.outcomes.values()) == {"downloaded"}
        again = _Recorder()
        client.pull("sensor-agg:1", progress=again)
        assert set(again.outcomes.values()) <= {"cached"}

        ports = [free_port() for _ in range(3)]
        for i, port in enumerate(ports):
            client.run(_sensor(f"s{i}", port))
        for port in ports:
            assert wait_http(f"http://127.0.0.1:{port}/healthz").status_code == 200
        before = {i.name: i for i in client.list()}
        assert set(before) == {"s0", "s1", "s2"}
        console = b"".join(client.follow("s0", follow=False))

        agent.kill9()
        for port in ports:  # the VMs are not the agent's children: they keep serving
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        agent.start()

        client = agent.client()
        after = {i.name: i for i in client.list()}
        assert set(after) == {"s0", "s1", "s2"}
        for name, instance in after.items():
            assert instance.state is InstanceState.RUNNING
            assert instance.pid == before[name].pid
        assert b"".join(client.follow("s0", follow=False)).startswith(console)
        ps = agent.cli("ps").stdout
        assert all(name in ps for name in ("s0", "s1", "s2")) and "Up " in ps

        stopped = client.stop("s1", timeout=10)
        assert stopped.state in (InstanceState.EXITED, InstanceState.FAILED)
        assert {i.name for i in client.list()} == {"s0", "s2"}
        assert client.stats("s0").rss_bytes > 0
        client.remove("s0", force=True)
        client.remove("s2", force=True)
        assert [i.name for i in client.list(all_instances=True)] == ["s1"]


def test_kill9_during_a_run_leaves_no_ghost(
    tmp_path: Path, hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent dies inside POST /v1/instances, once before its QEMU runs and once after. The
    restarted agent fails the first ("died while starting"; its restart policy starts it again)
    and adopts the second (the QEMU pid machine.json names); neither holds capacity as a ghost."""
    with running_agent(tmp_path / "data", "--hub", hub, "--memory", "200M") as agent:
        agent.client().pull("sensor-agg:1")
        for name, point in (("early", "host.start.after_claim"), ("late", "host.start.after_boot")):
            agent.stop()
            monkeypatch.setenv(CRASH_POINT_ENV, point)
            agent.start()
            with pytest.raises(AgentError):
                agent.client().run(_sensor(name, free_port(), restart={"name": "always"}))
            assert agent.process is not None and agent.process.wait(60) == -9
            monkeypatch.delenv(CRASH_POINT_ENV)
            agent.start()
        client = agent.client()
        late = client.get("late")
        assert late.state is InstanceState.RUNNING
        machine = json.loads((Path(late.workdir) / "vm" / "machine.json").read_text())
        assert late.pid == machine["pid"], "the QEMU that runs is adopted"
        early = client.get("early")
        assert early.runs >= 1 and early.restart_count <= 1
        deadline = time.monotonic() + 180  # the policy restarts the failed run
        while client.get("early").state is not InstanceState.RUNNING:
            assert time.monotonic() < deadline, client.get("early")
            time.sleep(0.2)
        assert client.get("early").restart_count == 1
        info = client.info()
        assert info.memory_committed_bytes == 2 * 96 * (1 << 20), "two instances, no ghosts"
        events = agent.log.read_text()
        assert "died while starting" in events
        for name in ("early", "late"):
            client.remove(name, force=True)


def test_admission_refuses_what_does_not_fit(tmp_path: Path, hub: str) -> None:
    # sensor-agg asks for 96 MiB: one fits in 160 MiB, a second does not.
    with running_agent(tmp_path / "data", "--hub", hub, "--memory", "160M") as agent:
        client = agent.client()
        client.run(_sensor("first", free_port()))
        with pytest.raises(AdmissionError, match="node cannot take instance second"):
            client.run(_sensor("second", free_port()))
        assert [i.name for i in client.list(all_instances=True)] == ["first"]
        refused = agent.cli("run", "-d", "--name", "third", "sensor-agg:1", check=False)
        assert refused.returncode != 0
        assert "node cannot take instance third" in refused.stderr
        client.remove("first", force=True)


@needs_mosquitto
def test_results_wait_in_the_spool_while_the_sink_is_down(tmp_path: Path, hub: str) -> None:
    broker = MosquittoBroker(tmp_path)  # not started: the sink is down
    with running_agent(tmp_path / "data", "--hub", hub, "--mqtt", broker.url) as agent:
        client = agent.client()
        ids = [
            client.run(run_request(image="hello-c:1", name=f"h{i}", args=[f"run{i}"])).id
            for i in range(3)
        ]
        for instance_id in ids:
            assert client.wait(instance_id, timeout=60).exit_code == 0
        agent.kill9()  # nothing delivered yet, and the agent is gone
        broker.start()
        # Subscribed before the agent can deliver: QoS 1 to a broker with no subscriber is
        # acknowledged and gone.
        subscriber = Subscriber(broker)
        agent.start()
        try:
            for i, instance_id in enumerate(ids):
                (envelope,) = subscriber.received(instance_id, 1, timeout=60)
                assert envelope["result"]["args"] == [f"run{i}"]
                assert envelope["seq"] == 1
        finally:
            subscriber.close()
            broker.stop()


def test_remote_cli_prints_what_local_prints(tmp_path: Path, hub: str) -> None:
    with running_agent(tmp_path / "data", "--hub", hub) as agent:
        pulled = agent.cli("pull", "hello-c:1")
        assert pulled.stdout.startswith("sha256:")
        ran = agent.cli("run", "--name", "fg", "-e", "HELLO_EXIT=3", "hello-c:1", "x", check=False)
        assert ran.returncode == 3
        assert "Hello, x!" in ran.stdout
        listed = agent.cli("ps", "-a", "--json")
        (record,) = json.loads(listed.stdout)
        assert record["name"] == "fg" and record["exit_code"] == 3
        assert "Hello, x!" in agent.cli("logs", "fg").stdout
        images = agent.cli("images").stdout
        assert "hello-c" in images
        assert agent.cli("rm", "fg").stdout.strip() == "fg"
        missing = agent.cli("logs", "fg", check=False)
        assert missing.returncode != 0 and "no such instance: fg" in missing.stderr
        local = subprocess.run(
            [*ukedge_cmd(), "--host", agent.url, "build", "."], capture_output=True, text=True
        )
        assert local.returncode != 0 and "does not take --host" in local.stderr


def test_rm_detached_through_an_agent_removes_the_instance_when_it_ends(
    tmp_path: Path, hub: str
) -> None:
    """`run --rm -d` (issue 16.3): no client is left to remove it, so the agent does."""
    with running_agent(tmp_path / "data", "--hub", hub) as agent:
        events = agent.client().events()
        ran = agent.cli("run", "--rm", "-d", "--name", "gone", "hello-c:1")
        assert ran.returncode == 0, ran.stderr
        actions = []
        for event in events:  # bounded by pytest's timeout if the removal never comes
            actions.append(event.action)
            if event.action == "remove":
                break
        assert actions[-2:] == ["die", "remove"], actions
        assert agent.cli("ps", "-aq").stdout.strip() == ""


@pytest.mark.parametrize("status", [0, 3])
def test_the_early_watch_judges_an_rm_instance_already_removed_by_its_die_event(
    tmp_path: Path, hub: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The race CI once lost made certain: the agent removed the instance before the watch's
    first look, so only the ``die`` event, subscribed before the run, can say how it ended."""
    from ukedge.cli._attach import fail_if_it_died_at_once

    with running_agent(tmp_path / "data", "--hub", hub) as agent:
        client = agent.client()
        client.pull("hello-c:1")
        watched, waited = agent.client().events(), agent.client().events()
        request = run_request(
            image="hello-c:1", name="gone", env={"HELLO_EXIT": str(status)}, auto_remove=True
        )
        # As `run` answered it under load: still running (hello-c may be done by the answer).
        instance = client.run(request).model_copy(update={"state": InstanceState.RUNNING})
        for event in waited:
            if event.id == instance.id and event.action == "remove":
                break
        if status == 0:
            fail_if_it_died_at_once(client, instance, watched)
            return
        with pytest.raises(SystemExit) as exited:
            fail_if_it_died_at_once(client, instance, watched)
        assert exited.value.code == status
        assert "instance gone ended at once: exited with status 3" in capsys.readouterr().err


def test_events_stream_state_changes(tmp_path: Path, hub: str) -> None:
    with running_agent(tmp_path / "data", "--hub", hub) as agent:
        client = agent.client()
        client.pull("hello-c:1")
        seen: list[tuple[str, str]] = []
        events = agent.client().events()
        instance = client.run(run_request(image="hello-c:1", name="ev"))
        deadline = time.monotonic() + 60
        for event in events:
            assert event.id == instance.id
            seen.append((event.action, event.state.value))
            if event.state in (InstanceState.EXITED, InstanceState.FAILED):
                break
            assert time.monotonic() < deadline
        actions = [action for action, _ in seen]
        assert actions[0] == "create" and "start" in actions and actions[-1] == "die"
        assert seen[-1][1] == "exited"


def test_on_demand_instance_boots_on_request_and_stops_when_idle(tmp_path: Path, hub: str) -> None:
    with running_agent(tmp_path / "data", "--hub", hub) as agent:
        client = agent.client()
        port = free_port()
        instance = client.run(_sensor("od", port, on_demand=True, idle_timeout_s=8.0))
        assert instance.state is InstanceState.CREATED  # listening, not booted
        assert "Idle (on demand)" in agent.cli("ps", "-a").stdout

        began = time.monotonic()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60).status_code == 200
        first = time.monotonic() - began
        assert client.get("od").state is InstanceState.RUNNING

        deadline = time.monotonic() + 60
        while client.get("od").state.active:  # idle for 8 s: scaled to zero
            assert time.monotonic() < deadline, "the idle on-demand VM was not stopped"
            time.sleep(0.2)

        agent.kill9()  # the listener goes with the agent and comes back with it
        agent.start()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60).status_code == 200
        assert client.get("od").state is InstanceState.RUNNING
        print(f"first request after {first:.2f} s")
        agent.client().remove("od", force=True)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_on_demand_needs_an_agent_and_a_free_port(tmp_path: Path, hub: str) -> None:
    local = subprocess.run(
        [*ukedge_cmd(), "run", "--on-demand", "-p", "8080:8080", "sensor-agg:1"],
        capture_output=True,
        text=True,
    )
    assert local.returncode == 2 and "needs a host agent" in local.stderr
    with running_agent(tmp_path / "data", "--hub", hub) as agent, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InstanceError, match=f"127.0.0.1:{port}"):
            agent.client().run(_sensor("od", port, on_demand=True))
        assert agent.client().list(all_instances=True) == []


def _metric(agent: Any, sample: str) -> float | None:
    """The value of the ``sample`` (name and labels, as exposed) on the agent's /metrics."""
    headers = {"Authorization": f"Bearer {agent.token}"}
    text = httpx.get(f"{agent.url}/metrics", headers=headers, timeout=10).text
    assert "_created" not in text, "counters carry no _created twin"
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_metric(agent: Any, sample: str, ok: Any, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = _metric(agent, sample)
        if value is not None and ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{sample} is {value} after {timeout}s")
        time.sleep(0.5)


@needs_mosquitto
def test_metrics_show_restarts_health_failures_and_the_results_backlog(
    tmp_path: Path, hub: str
) -> None:
    broker = MosquittoBroker(tmp_path)  # not started: the sink is down
    sink = f'{{sink="{broker.url}"}}'
    with running_agent(tmp_path / "data", "--hub", hub, "--mqtt", broker.url) as agent:
        client = agent.client()
        done = client.run(run_request(image="hello-c:1", name="one", args=["r"]))
        assert client.wait(done.id, timeout=90).exit_code == 0
        assert _wait_metric(agent, f"ukedge_agent_results_backlog{sink}", lambda v: v >= 1) >= 1
        age = f"ukedge_agent_results_oldest_undelivered_seconds{sink}"
        assert _wait_metric(agent, age, lambda v: v > 0) > 0

        client.run(
            run_request(
                image="hello-c:1",
                name="flaky",
                env={"HELLO_EXIT": "3"},
                restart={"name": "on-failure", "max_retries": 2},
            )
        )
        restarts = 'ukedge_agent_instance_restarts_total{instance="flaky"}'
        assert _wait_metric(agent, restarts, lambda v: v >= 2, timeout=240) == 2
        # The app listens on 9999; its health check asks 8080 and fails.
        client.run(_sensor("sick", free_port(), env={"PORT": "9999"}))
        failures = 'ukedge_agent_health_check_failures_total{instance="sick"}'
        assert _wait_metric(agent, failures, lambda v: v >= 2, timeout=240) >= 2
        assert _metric(agent, 'ukedge_agent_health_check_failures_total{instance="one"}') == 0

        broker.start()
        try:
            assert _wait_metric(agent, f"ukedge_agent_results_backlog{sink}", lambda v: v == 0) == 0
            assert _metric(agent, age) == 0
        finally:
            broker.stop()
