"""Booting the real kernel + guest init + a tiny static app under QEMU, without the vmm backend
(so these tests pin the guest contract itself, whatever the backend does). The machine's files
lie where every backend keeps them (:class:`~ukedge.vmm.MachinePaths`, part of the backend
contract), so the layout is written once."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ukedge.build.guest import add_platform, host_tsc_khz
from ukedge.guest import (
    CONTROL_PORT,
    RESULTS_PORT,
    CpioArchive,
    guest_cmdline,
    launch_archive,
    parse_exit_line,
    seed_archive,
)
from ukedge.image import ImageConfig, KernelInfo
from ukedge.kernel import Kernel
from ukedge.vmm import MachinePaths

#: The test application: one static binary whose first argument picks what it checks.
APP_SOURCE = r"""
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on_signal(int sig) { got = sig; }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "report") == 0) {
        char host[65] = "", cwd[256] = "";
        gethostname(host, sizeof host);
        if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "?");
        printf("host=%s cwd=%s argc=%d", host, cwd, argc);
        for (int i = 2; i < argc; i++) printf(" arg%d=[%s]", i, argv[i]);
        printf(" FOO=[%s] PATH=[%s] time=%ld", getenv("FOO") ? getenv("FOO") : "(unset)",
               getenv("PATH") ? getenv("PATH") : "(unset)", (long)time(NULL));
        printf(" seedfile=%s\n", access("/ukedge/seed", F_OK) == 0 ? "present" : "gone");
        int fd = open("/dev/ukedge-results", O_WRONLY);
        if (fd < 0) { perror("open /dev/ukedge-results"); return 99; }
        dprintf(fd, "{\"seq\": 1}\n{\"seq\": 2}\n");
        close(fd);
        return 3;
    }
    if (strcmp(mode, "net") == 0) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(53)};
        inet_pton(AF_INET, "10.0.2.2", &dst.sin_addr);
        if (connect(s, (struct sockaddr *)&dst, sizeof dst) != 0) { perror("connect"); return 98; }
        struct sockaddr_in me; socklen_t len = sizeof me;
        getsockname(s, (struct sockaddr *)&me, &len);
        char buf[64]; int fd = open("/etc/resolv.conf", O_RDONLY); ssize_t n = read(fd, buf, 63);
        buf[n > 0 ? n : 0] = 0;
        printf("local=%s resolv=[%s]\n", inet_ntoa(me.sin_addr), buf);
        return 0;
    }
    if (strcmp(mode, "wait") == 0) {
        struct timespec t0, t1;
        signal(SIGTERM, on_signal);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        printf("waiting for SIGTERM\n");
        fflush(stdout);
        while (!got) pause();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("got signal %d after %.3f s\n", got,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        return 42;
    }
    if (strcmp(mode, "kill") == 0) { kill(getpid(), SIGKILL); }
    return 1;
}
"""


def compile_app(dest: Path) -> Path:
    cc = shutil.which("musl-gcc") or "gcc"
    source = dest.with_suffix(".c")
    source.write_text(APP_SOURCE)
    subprocess.run([cc, "-static", "-Os", "-s", "-o", str(dest), str(source)], check=True)
    return dest


def image_config(entrypoint: Sequence[str] = ("/app/probe",), **kw: object) -> ImageConfig:
    return ImageConfig.model_validate(
        {
            "name": "probe",
            "runtime": "static",
            "entrypoint": list(entrypoint),
            "kernel": KernelInfo(profile="minimal", version="6.1"),
            **kw,
        }
    )


def initramfs(app: Path, launch: bytes) -> bytes:
    archive = CpioArchive()
    add_platform(archive)
    archive.add_file("app/probe", app, 0o755)
    buf = io.BytesIO()
    archive.write(buf)
    return buf.getvalue() + launch


@dataclass
class Boot:
    paths: MachinePaths
    proc: subprocess.Popen[bytes]

    @property
    def console(self) -> Path:
        return self.paths.console

    @property
    def results(self) -> Path:
        return self.paths.results

    @property
    def control(self) -> Path:
        return self.paths.control

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_for_console(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.console_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = self.console_text()
                raise AssertionError(f"{needle!r} never appeared on the console:\n{text}")
            time.sleep(0.05)

    def send_control(self, line: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.control))
            s.sendall(line.encode() + b"\n")
            time.sleep(0.2)  # let QEMU read it before the connection closes

    def wait(self, timeout: float = 90) -> int | None:
        """QEMU's end; returns the app status from the exit line."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        qemu_log = self.paths.log.read_text(errors="replace")
        assert self.proc.returncode == 0, f"QEMU exited with {self.proc.returncode}: {qemu_log}"
        return parse_exit_line(self.console_text())


def boot(
    kernel: Kernel,
    app: Path,
    workdir: Path,
    config: ImageConfig,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] | None = None,
    hostname: str | None = None,
    network: bool = False,
    debug: bool = False,
) -> Boot:
    paths = MachinePaths(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    paths.sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.initrd.write_bytes(
        initramfs(
            app,
            launch_archive(
                argv=[*config.entrypoint, *(config.args if args is None else args)],
                env={**config.env, **(env or {})},
                workdir=config.workdir,
                hostname=hostname or config.name,
            )
            + seed_archive(bytes(range(32))),
        )
    )
    cmdline = guest_cmdline(
        kernel.cmdline + (" ukedge.debug" if debug else ""),
        ip="10.0.2.15/24" if network else None,
        gateway="10.0.2.2" if network else None,
        dns="10.0.2.3" if network else None,
        tsc_khz=host_tsc_khz(),
    )
    argv = [
        "qemu-system-x86_64",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-M",
        "pc",
        "-bios",
        "/usr/share/qemu/qboot.rom",
        "-m",
        "64",
        "-kernel",
        str(kernel.vmlinux),
        "-initrd",
        str(paths.initrd),
        "-append",
        cmdline,
        "-serial",
        f"file:{paths.console}",
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        f"file,id=results,path={paths.results}",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=results,name={RESULTS_PORT}",
        "-chardev",
        f"socket,id=control,path={paths.control},server=on,wait=off",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=control,name={CONTROL_PORT}",
    ]
    if network:
        argv += ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="]
    with paths.log.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 10
    while not paths.control.exists() and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return Boot(paths, proc)
