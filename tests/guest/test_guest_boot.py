"""Real VMs: the built kernel, the guest init and a static test app under QEMU (TCG here)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kit.guest import boot, compile_app, image_config
from ukedge.kernel import Kernel, ensure_kernel

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    return ensure_kernel("minimal")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_app(tmp_path_factory.mktemp("app") / "probe")


def test_exit_status_env_args_hostname_results(kernel: Kernel, app: Path, tmp_path: Path) -> None:
    config = image_config(args=["ignored"], env={"FOO": "from-config"}, workdir="/app")
    before = time.time()
    vm = boot(
        kernel,
        app,
        tmp_path,
        config,
        env={"FOO": "two words"},
        args=["report", "a b", ""],
        hostname="edge-7",
        debug=True,
    )
    assert vm.wait() == 3
    text = vm.console_text()
    assert "host=edge-7 cwd=/app argc=4 arg2=[a b] arg3=[] FOO=[two words]" in text
    assert "PATH=[/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin]" in text
    guest_time = int(text.split(" time=")[1].split()[0])
    assert before - 5 <= guest_time <= time.time() + 5  # ukedge.time set the clock
    lines = vm.results.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"seq": 1}, {"seq": 2}]
    assert text.count("ukedge-exit:") == 1
    # The seed came in the initrd (not on the command line): credited, then gone from the guest.
    assert "credited 256 bits of entropy from /ukedge/seed" in text
    assert "seedfile=gone" in text


def test_stop_on_control_port_sends_sigterm(kernel: Kernel, app: Path, tmp_path: Path) -> None:
    vm = boot(kernel, app, tmp_path, image_config(args=["wait"]))
    vm.wait_for_console("waiting for SIGTERM")
    started = time.monotonic()
    time.sleep(2)
    vm.send_control("stop")
    assert vm.wait() == 42
    text = vm.console_text()
    assert "got signal 15 after " in text
    # The guest's clock runs at the host's rate (tsc_early_khz from the host is right).
    guest_elapsed = float(text.split("got signal 15 after ")[1].split()[0])
    host_elapsed = time.monotonic() - started
    assert 1.5 < guest_elapsed < host_elapsed + 0.5


def test_signal_death_is_128_plus_signal(kernel: Kernel, app: Path, tmp_path: Path) -> None:
    vm = boot(kernel, app, tmp_path, image_config(args=["kill"]))
    assert vm.wait() == 137


def test_missing_program_is_127(kernel: Kernel, app: Path, tmp_path: Path) -> None:
    vm = boot(kernel, app, tmp_path, image_config(entrypoint=["/app/nope"]))
    assert vm.wait() == 127
    assert "cannot run /app/nope" in vm.console_text()


def test_network_from_cmdline(kernel: Kernel, app: Path, tmp_path: Path) -> None:
    vm = boot(kernel, app, tmp_path, image_config(args=["net"]), network=True)
    assert vm.wait() == 0
    assert "local=10.0.2.15 resolv=[nameserver 10.0.2.3\n]" in vm.console_text()
