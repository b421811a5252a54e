"""The forms that need no packaging of their own: the app as a host process (the floor) and as
the ukedge unikernel (cold boot, and resumed from its prewarm snapshot), plus the full VM's
runner around the image :mod:`compare._fullvm` builds."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from compare._fullvm import FullVmImage, qemu_argv
from compare._measure import Running
from compare._surface import du, kernel_options, tree_counts
from ukedge.host import InstanceManager, RunRequest, parse_port_mapping

__all__ = ["FullVmForm", "ProcessForm", "UnikernelForm"]


def _tgz_size(root: Path) -> int:
    with tempfile.TemporaryFile() as f:
        with tarfile.open(fileobj=f, mode="w:gz") as tar:
            tar.add(root, arcname=".")
        return f.tell()


class ProcessForm:
    """``python3 -S -u main.py`` on the host, as bench/boot.py starts it: the host's own Python
    and libraries, which the artefact figures do not count (they are the host's)."""

    key = "process"
    label = "process (host python3)"

    def __init__(self, app: Path, work: Path) -> None:
        self.app = app
        self.work = work

    def prepare(self) -> dict[str, object]:
        return {
            "compressed": _tgz_size(self.app),
            "on_disk": du(self.app),
            **tree_counts(self.app),
            "note": "the app's files only; the host's python3 and libraries are not counted",
        }

    def start(self, port: int) -> Running:
        env = {**os.environ, "PORT": str(port), "RESULTS_FILE": str(self.work / f"r{port}.jsonl")}
        proc = subprocess.Popen(
            [sys.executable, "-S", "-u", str(self.app / "main.py")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            proc.terminate()
            proc.wait(10)

        return Running(port, lambda: [proc.pid], stop, lambda: proc.poll() is None)


class UnikernelForm:
    """The ukedge image through the instance manager ``ukedge run`` uses; ``resumed`` starts
    from the image's prewarm snapshot (taken in :meth:`prepare`)."""

    def __init__(
        self,
        manager: InstanceManager,
        image: str,
        artefact: dict[str, object],
        *,
        resumed: bool,
    ) -> None:
        self.manager = manager
        self.image = image
        self.artefact = artefact
        self.resumed = resumed
        self.key = "unikernel-resumed" if resumed else "unikernel-cold"
        self.label = "unikernel, resumed from snapshot" if resumed else "unikernel, cold boot"

    def prepare(self) -> dict[str, object]:
        if self.resumed:
            self.manager.prewarm(RunRequest(image=self.image))
        return self.artefact

    def start(self, port: int) -> Running:
        instance = self.manager.run(
            RunRequest(
                image=self.image,
                ports=[parse_port_mapping(f"{port}:8080")],
                cold=not self.resumed,
            )
        )
        pid = instance.pid
        assert pid is not None

        def stop() -> None:
            self.manager.remove(instance.id, force=True)

        def alive() -> bool:
            return self.manager.get(instance.id).state.active

        return Running(port, lambda: [pid], stop, alive)


class FullVmForm:
    """Debian + systemd booted by QEMU, the app a systemd service."""

    key = "full-vm"

    def __init__(
        self, image: FullVmImage, accel: str, memory_mib: int, vcpus: int, work: Path
    ) -> None:
        self.image = image
        self.accel = accel
        self.memory_mib = memory_mib
        self.vcpus = vcpus
        self.work = work
        self.label = f"full VM (Debian 12 + systemd, {memory_mib} MiB, {vcpus} vCPU)"

    def prepare(self) -> dict[str, object]:
        options = kernel_options(self.image.kernel_config)
        return {
            "compressed": self.image.disk_compressed.stat().st_size,
            "on_disk": self.image.disk.stat().st_size,
            **tree_counts(self.image.tree),
            "kernel_options": options["enabled"],
            "kernel_options_detail": options,
            "kernel": self.image.kernel.name,
        }

    def start(self, port: int) -> Running:
        console = self.work / f"fullvm-{port}.log"
        argv = qemu_argv(
            self.image,
            accel=self.accel,
            memory_mib=self.memory_mib,
            vcpus=self.vcpus,
            port=port,
            console=console,
        )
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                console.unlink()

        return Running(port, lambda: [proc.pid], stop, lambda: proc.poll() is None)
