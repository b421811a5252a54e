"""The registry client against the ukedge hub over real HTTP: transfers and the token flow."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kit.hub import RunningHub, run_hub
from kit.net import free_port
from kit.registry import (
    CountingTransport,
    Interrupted,
    Recorder,
    blob_digests,
    make_image,
    push_concurrently,
)
from ukedge.errors import AuthenticationError
from ukedge.image import ImageStore
from ukedge.registry import (
    Credentials,
    CredentialStore,
    RegistryClient,
    list_tags,
    login,
    logout,
    pull,
    push,
    search,
)

PASSWORD = "correct-horse-battery"


@pytest.fixture
def open_hub(tmp_path: Path) -> Iterator[RunningHub]:
    with run_hub(tmp_path / "hub", auth="off") as hub:
        yield hub


@pytest.fixture
def secured_hub(tmp_path: Path) -> Iterator[RunningHub]:
    with run_hub(tmp_path / "hub", auth="on", anonymous_pull=["public/*"]) as hub:
        hub.hub.auth.add_user("alice", PASSWORD)
        yield hub


def test_round_trip_and_resume_against_the_hub(open_hub: RunningHub, tmp_path: Path) -> None:
    store, dst = ImageStore(tmp_path / "s"), ImageStore(tmp_path / "d")
    chunk = 32 * 1024
    digest = make_image(store, "app:1", kernel=os.urandom(10 * chunk + 7))
    kernel = store.manifest("app:1")[1].layers[0].digest
    remote = f"{open_hub.host}/team/app:1"
    state = tmp_path / "state"
    with (
        RegistryClient(open_hub.host, chunk_size=chunk, max_workers=1, state_dir=state) as c,
        pytest.raises(Interrupted),
    ):
        push(store, "app:1", remote, client=c, progress=Recorder(stop_after=4 * chunk))
    recorder = Recorder()
    with RegistryClient(open_hub.host, chunk_size=chunk, state_dir=state) as c:
        assert push(store, "app:1", remote, client=c, progress=recorder) == digest
        assert recorder.outcomes[kernel] == "resumed"
        assert recorder.updates[kernel][0] == 4 * chunk
        pulled = pull(dst, remote, client=c)
    assert pulled.digest == digest
    assert blob_digests(store, "app:1") == blob_digests(dst, remote)


def test_login_stores_credentials_0600_and_token_flow_pushes(
    secured_hub: RunningHub, tmp_path: Path, ukedge_home: Path
) -> None:
    host = secured_hub.host
    assert login(host, "alice", PASSWORD) is True
    creds = CredentialStore()
    assert creds.path == ukedge_home / "auth.json"
    assert stat.S_IMODE(creds.path.stat().st_mode) == 0o600
    assert creds.get(host) == Credentials("alice", PASSWORD)
    assert PASSWORD not in creds.path.read_text()  # encoded, as docker does; not encrypted

    store, dst = ImageStore(tmp_path / "s"), ImageStore(tmp_path / "d")
    kernel = os.urandom(50_000)
    digest = make_image(store, "app:1", kernel=kernel, labels={"team": "sensors"})
    make_image(store, "app:2", kernel=kernel)
    # A new client reads the saved credentials; tokens are fetched per repository and scope.
    with RegistryClient(host, state_dir=tmp_path / "st") as c:
        assert push(store, "app:1", f"{host}/team/app:1", client=c) == digest
        recorder = Recorder()
        push(store, "app:2", f"{host}/team/other:1", client=c, progress=recorder)
        assert "mounted" in recorder.outcomes.values()
        assert pull(dst, f"{host}/team/app:1", client=c).digest == digest
    assert list_tags(f"{host}/team/app") == ["1"]
    hits = search("sensors", registry=host)
    assert [(h.repository, h.matched) for h in hits] == [("team/app", ("label team=sensors",))]

    assert logout(host) is True
    assert creds.get(host) is None
    assert logout(host) is False


def test_wrong_password_is_refused_and_nothing_saved(secured_hub: RunningHub) -> None:
    with pytest.raises(AuthenticationError, match="refused a token"):
        login(secured_hub.host, "alice", "wrong-password")
    assert CredentialStore().get(secured_hub.host) is None


def test_anonymous_push_says_to_log_in(secured_hub: RunningHub, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    make_image(store, "app:1")
    with pytest.raises(AuthenticationError, match=f"ukedge login {secured_hub.host}"):
        push(store, "app:1", f"{secured_hub.host}/team/app:1")


def test_anonymous_pull_of_a_public_namespace(secured_hub: RunningHub, tmp_path: Path) -> None:
    host = secured_hub.host
    store = ImageStore(tmp_path / "s")
    digest = make_image(store, "app:1")
    alice = Credentials("alice", PASSWORD)
    with RegistryClient(host, credentials=alice, state_dir=tmp_path / "st") as c:
        push(store, "app:1", f"{host}/public/app:1", client=c)
        push(store, "app:1", f"{host}/private/app:1", client=c)
    assert pull(ImageStore(tmp_path / "d"), f"{host}/public/app:1").digest == digest
    with pytest.raises(AuthenticationError, match="ukedge login"):
        pull(ImageStore(tmp_path / "d2"), f"{host}/private/app:1")


def test_robot_token_for_one_repository_cannot_push_another(
    secured_hub: RunningHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = secured_hub.host
    robot = secured_hub.hub.auth.create_robot("ci", ["repository:team/app:pull,push"])
    # CI style: credentials from the environment, no login.
    monkeypatch.setenv("UKEDGE_REGISTRY_USER", "ci")
    monkeypatch.setenv("UKEDGE_REGISTRY_PASSWORD", robot.token)
    store = ImageStore(tmp_path / "s")
    digest = make_image(store, "app:1")
    assert push(store, "app:1", f"{host}/team/app:1") == digest
    with pytest.raises(AuthenticationError):
        push(store, "app:1", f"{host}/team/other:1")


def test_concurrent_pushes_sharing_layers_to_the_hub(open_hub: RunningHub, tmp_path: Path) -> None:
    push_concurrently(open_hub.host, tmp_path)


class _HubProcess:
    """``ukedge hub serve`` as its own process, so that it can be SIGKILLed."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.host = f"127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = Path(sys.executable).with_name("ukedge")
        self.process = subprocess.Popen(
            [str(exe), "hub", "serve", "--addr", self.host, "--data", str(self.data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "hub exited"
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("hub did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


def test_hub_sigkilled_mid_push_then_restarted(tmp_path: Path) -> None:
    """Our client, a ukedge image, the real ``ukedge hub serve``: SIGKILL while the kernel layer
    is half up, restart, push again; the push continues and the pulled image is identical."""
    hub = _HubProcess(tmp_path / "hub")
    hub.start()
    try:
        store, dst = ImageStore(tmp_path / "s"), ImageStore(tmp_path / "d")
        chunk = 256 * 1024
        digest = make_image(store, "app:1", kernel=os.urandom(12 * chunk + 3))
        kernel = store.manifest("app:1")[1].layers[0].digest
        remote = f"{hub.host}/edge/app:1"
        state = tmp_path / "state"

        class KillHub(Recorder):
            def update(self, d: str, completed: int) -> None:
                super().update(d, completed)
                if d == kernel and completed >= 5 * chunk:
                    hub.kill()  # the hub dies between two chunks of ours
                    raise Interrupted("hub gone")

        def client(transport: httpx.BaseTransport | None = None) -> RegistryClient:
            return RegistryClient(
                hub.host,
                chunk_size=chunk,
                max_workers=1,
                state_dir=state,
                retries=0,
                transport=transport,
            )

        with client() as c, pytest.raises(Interrupted):
            push(store, "app:1", remote, client=c, progress=KillHub())
        hub.start()
        recorder = Recorder()
        transport = CountingTransport()
        with client(transport) as c:
            assert push(store, "app:1", remote, client=c, progress=recorder) == digest
            pull(dst, remote, client=c)
        assert recorder.outcomes[kernel] == "resumed"
        assert recorder.updates[kernel][0] == 5 * chunk
        assert transport.count("PATCH") == 8  # 7 chunks left + the 3-byte tail
        assert blob_digests(store, "app:1") == blob_digests(dst, remote)
    finally:
        hub.kill()
