"""The README's "A 5-minute tour", run line by line in one bash as written, so it cannot drift.

What is changed, and only that: the ports (free ones instead of 18080, 5000, 7600, 1883, 18081,
18082), the hub's ``/tmp/hub`` (a temporary directory), a temporary ``UKEDGE_HOME`` and working
directory (with ``examples`` and ``.venv`` linked in), and a Mosquitto the test starts for the
agent's ``--mqtt``. After a line that starts a server with ``&`` the script waits for its port,
and after a detached ``run`` that publishes a port it waits for the app to answer HTTP there, as
a user would before typing on (a daemonless ``run -d`` returns after its 5 s watch, which a cold
boot on a loaded machine can outlast).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.mqtt import MosquittoBroker, needs_mosquitto
from kit.net import free_port

pytestmark = [pytest.mark.vm, pytest.mark.kernel, pytest.mark.interop, needs_mosquitto]

ROOT = Path(__file__).resolve().parents[2]
_PORTS = (18080, 5000, 7600, 1883, 18081, 18082)
_MARK = "@@tour"


def tour_lines(readme: str) -> list[str]:
    """The commands of the fenced block under "## A 5-minute tour" (blank lines dropped)."""
    section = readme.split("## A 5-minute tour", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _script(lines: list[str], ports: dict[int, int], hub_data: Path) -> str:
    def port_of(text: str) -> str:
        return re.sub(
            r"\b(" + "|".join(map(str, ports)) + r")\b", lambda m: str(ports[int(m[1])]), text
        )

    out = [
        # Background servers in their own process groups: the test stops them whole.
        "set -m",
        "__rc=0",
        "__wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null "
        "&& return 0; sleep 0.1; done; return 1; }",
        # QEMU's user network accepts a connection before the guest listens: wait for HTTP.
        "__wait_http() { for _ in $(seq 1200); do curl -s -o /dev/null "
        "http://127.0.0.1:$1/ && return 0; sleep 0.1; done; return 1; }",
    ]
    for i, line in enumerate(lines):
        text = port_of(line).replace("/tmp/hub", str(hub_data))
        out.append(f"echo '{_MARK} {i} start'")
        out.append("(exit $__rc)")  # so that `echo $?` sees the status of the line before
        out.append(text)
        out.append(f'__rc=$?; echo "{_MARK} {i} rc=$__rc"')
        if re.search(r"&\s*(#.*)?$", text):
            out.append(f'echo "{_MARK} pid $!"')
            served = ports[7600] if "host serve" in text else int(re.findall(r":(\d+)", text)[0])
            out.append(f"__wait_port {served}")
        elif (published := re.search(r"\brun -d\b.* -p (\d+):", text)) is not None:
            out.append(f"__wait_http {published[1]}")
    return "\n".join(out) + "\n"


def _sections(output: str) -> dict[int, tuple[str, int]]:
    """Each line's output and exit status, by its index in the tour."""
    found: dict[int, tuple[str, int]] = {}
    for m in re.finditer(rf"^{_MARK} (\d+) start\n(.*?){_MARK} \1 rc=(\d+)$", output, re.M | re.S):
        found[int(m[1])] = (m[2], int(m[3]))
    return found


def _clean_up(output: str, env: dict[str, str], agent_port: int) -> None:
    """Remove what the agent still runs (its VMs outlive it), then stop the tour's servers."""
    agent = {**env, "UKEDGE_HOST": f"http://127.0.0.1:{agent_port}"}
    ids = subprocess.run(
        [sys.executable, "-m", "ukedge.cli.main", "ps", "-aq"],
        env=agent,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if ids:
        subprocess.run(
            [sys.executable, "-m", "ukedge.cli.main", "rm", "-f", *ids],
            env=agent,
            capture_output=True,
            check=False,
        )
    for pid in re.findall(rf"^{_MARK} pid (\d+)$", output, re.M):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGTERM)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path)
    b.start()
    yield b
    b.stop()


def test_readme_tour_runs_as_written(
    tmp_path: Path, ukedge_home: Path, broker: MosquittoBroker
) -> None:
    lines = tour_lines((ROOT / "README.md").read_text())
    ports = {p: free_port() for p in _PORTS}
    ports[1883] = broker.port
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (work / ".venv").symlink_to(Path(sys.prefix))
    hub_data = tmp_path / "hub"
    env = {
        **os.environ,
        "UKEDGE_HOME": str(ukedge_home),
        "UKEDGE_AGENT_ADDR": f"127.0.0.1:{ports[7600]}",
        "PYTHONPATH": str(ROOT / "src"),
    }
    env.pop("UKEDGE_HOST", None)
    script = _script(lines, ports, hub_data)
    (tmp_path / "tour.sh").write_text(script)
    proc = subprocess.Popen(
        ["bash", str(tmp_path / "tour.sh")],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    try:
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            output, _ = proc.communicate()
        (tmp_path / "tour.out").write_text(output)
        _clean_up(output, env, ports[7600])
    sections = _sections(output)
    assert len(sections) == len(lines), f"not every line ran:\n{output}"

    def ran(fragment: str) -> tuple[str, int]:
        (index,) = [i for i, line in enumerate(lines) if fragment in line]
        return sections[index]

    # Every line succeeds but the two that say they do not.
    for i, (text, rc) in sections.items():
        if lines[i].startswith("timeout 10 ukedge events"):
            assert rc == 124, text  # it waits for new events until the timeout ends it
        elif "HELLO_EXIT=3" in lines[i]:
            assert rc == 3, text
        else:
            assert rc == 0, f"{shlex.quote(lines[i])} exited {rc}:\n{text}"
    assert "Hello, edge!" in ran("HELLO_EXIT=3")[0]
    assert ran("echo $?")[0].strip() == "3"
    started = ran("--name agg")[0]  # the id, then (stderr) why its health shows unchecked
    assert re.fullmatch(r"[0-9a-f]{32}", started.splitlines()[0]), started
    assert "no agent supervises this instance" in started
    assert '"t1"' in ran("/stats")[0] and '"count":1' in ran("/stats")[0].replace(" ", "")
    assert "agg" in ran("ukedge ps; ukedge logs agg")[0]
    assert "pushed 127.0.0.1:" in ran("ukedge push")[0]
    assert "pulled 127.0.0.1:" in ran("ukedge pull")[0]
    assert "accelerator" in ran("ukedge info")[0].lower()
    assert "ok" in ran("18082/healthz")[0]
    assert "sensor-agg" in ran("ukedge ps -a")[0]
    assert "application/vnd.oci.image.manifest.v1+json" in ran("skopeo inspect")[0]
    assert (work / "agg.tar").stat().st_size > 1 << 20
    assert (work / "hub.log").exists() and (work / "agent.log").exists()
