"""A real host agent for tests: ``ukedge host serve`` as its own process (so it can be killed
with SIGKILL and started again), plus a hub with the example images pushed to it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kit.host import ukedge_cmd
from kit.hub import start_hub
from kit.net import free_port
from ukedge import vmm
from ukedge.errors import MachineError
from ukedge.host import AgentClient
from ukedge.image import ImageStore
from ukedge.registry import push


@dataclass
class AgentProcess:
    data: Path
    port: int
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: list[str] = field(default_factory=list)
    _clients: list[AgentClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket(self) -> Path:
        return self.data / "agent.sock"

    @property
    def token(self) -> str:
        return (self.data / "token").read_text().strip()

    def client(self, *, unix: bool = False, token: str | None = None) -> AgentClient:
        """A client closed when the agent stops."""
        if unix:
            client = AgentClient(f"unix://{self.socket}")
        else:
            client = AgentClient(self.url, token=token or self.token)
        self._clients.append(client)
        return client

    def cli(
        self, *args: str, check: bool = True, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """``ukedge --host URL ARGS`` with the agent's token, as a user would run it."""
        env = {**os.environ, "UKEDGE_HOST": self.url, "UKEDGE_HOST_TOKEN": self.token}
        return subprocess.run(
            [*ukedge_cmd(), *args],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=180,
            **kwargs,  # type: ignore[call-overload]
        )

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *ukedge_cmd(),
                    "host",
                    "serve",
                    "--data",
                    str(self.data),
                    "--addr",
                    f"127.0.0.1:{self.port}",
                    "--log-format",
                    "text",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"agent exited {self.process.returncode}: {self.log.read_text()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent did not answer in 60 s: {self.log.read_text()}")
            time.sleep(0.05)
        self.starts.append(self.log.read_text())

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill_machines(self) -> None:
        """Whatever the tests left running: the VMs outlive the agent by design."""
        backend = vmm.create("qemu")
        for workdir in (self.data / "instances").glob("*/vm"):
            with contextlib.suppress(MachineError):
                machine = backend.attach(workdir)
                if not machine.state.final:
                    machine.kill()


@contextlib.contextmanager
def running_agent(data: Path, *args: str) -> Iterator[AgentProcess]:
    agent = AgentProcess(data, free_port(), list(args), data.parent / f"{data.name}.log")
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()
        agent.kill_machines()


def push_examples(store: ImageStore, hub_addr: str, *refs: str) -> None:
    """Push images of ``store`` to the hub at ``hub_addr`` under their own names."""
    for ref in refs:
        push(store, ref, f"{hub_addr}/{ref}")


@contextlib.contextmanager
def examples_hub(data: Path, store: ImageStore, *refs: str) -> Iterator[str]:
    """A hub served from ``data`` with ``refs`` of ``store`` pushed to it: its address."""
    running = start_hub(data)
    try:
        addr = running.url.removeprefix("http://")
        push_examples(store, addr, *refs)
        yield addr
    finally:
        running.stop()
