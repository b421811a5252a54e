"""The container forms: the OCI image of :mod:`compare._oci` run by runc, by crun and by podman.

runc and crun run a bundle unpacked once from the layout (like a container engine's cached
unpack) with a read-only root shared by every instance and a tmpfs ``/tmp`` for the results
file. They share the host's network namespace: neither has port publishing of its own (that is
an engine's job, CNI's or netavark's), so each instance listens on its own host port. podman
pulls the layout through its ``oci:`` transport and runs it the way a user would, ``-p``
publishing the port from its bridge network, with its default seccomp profile.

crun 1.8 refuses to start on a cgroup-hybrid host (v1 controllers plus a cgroup2 mount at
``/sys/fs/cgroup/unified``). There every crun call runs in a private mount namespace where
that cgroup2 mount is unmounted, so crun sees a plain cgroup-v1 host; the report says so.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

from compare._measure import Running
from compare._oci import OciImage, unpack

__all__ = ["PodmanForm", "RuntimeForm", "cgroup_hybrid", "runtime_config"]

_UNIFIED = Path("/sys/fs/cgroup/unified")
_STATE = Path("/run/ukedge-compare")
#: podman's default limits (open files 2^20, processes) may exceed this host's hard limits, which
#: the runtime may not raise: the container gets fixed ones (`--ulimit host` fails the same way).
_PODMAN_RUN = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")


def cgroup_hybrid() -> bool:
    """cgroup v1 controllers with a cgroup2 mount beside them."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == str(_UNIFIED) and fields[2] == "cgroup2":
                return True
    return False


def runtime_config(image: dict[str, object], port: int, rootfs: Path) -> dict[str, object]:
    """An OCI runtime config (what ``runc spec`` writes, minus the terminal and the network
    namespace) running the image's entrypoint on ``port``."""
    entry = [str(a) for a in image.get("Entrypoint") or []]  # type: ignore[attr-defined]
    cmd = [str(a) for a in image.get("Cmd") or []]  # type: ignore[attr-defined]
    own = ("PORT=", "RESULTS_FILE=")  # set per instance below
    env = [str(e) for e in image.get("Env") or [] if not str(e).startswith(own)]  # type: ignore[attr-defined]
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [*entry, *cmd],
            "env": [*env, f"PORT={port}", "RESULTS_FILE=/tmp/results.jsonl"],
            "cwd": image.get("WorkingDir") or "/",
            "capabilities": dict.fromkeys(("bounding", "effective", "permitted", "ambient"), caps),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "sensor-agg",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=16m"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    }


def _check(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


class RuntimeForm:
    """runc or crun running the unpacked bundle."""

    def __init__(self, runtime: str, oci: OciImage, work: Path) -> None:
        self.runtime = runtime
        self.key = f"container-{runtime}"
        self.oci = oci
        self.work = work / self.key
        self.rootfs = self.work / "rootfs"
        self.hidden_cgroup2 = runtime == "crun" and cgroup_hybrid()
        self.label = f"container ({runtime}, host network)"
        self.image: dict[str, object] = {}

    def _cmd(self, *args: str) -> list[str]:
        base = [self.runtime, "--root", str(_STATE / self.runtime), *args]
        if not self.hidden_cgroup2:
            return base
        script = f'umount {_UNIFIED} && exec "$@"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *base]

    def prepare(self) -> dict[str, object]:
        if shutil.which(self.runtime) is None:
            raise RuntimeError(f"{self.runtime} is not installed (apt-get install {self.runtime})")
        if self.work.exists():
            shutil.rmtree(self.work)
        self.image = unpack(self.oci.layout, self.oci.tag, self.rootfs)
        version = _check([self.runtime, "--version"]).splitlines()[0]
        return {"runtime": version, "cgroup2_hidden": self.hidden_cgroup2}

    def start(self, port: int) -> Running:
        cid = f"compare-{uuid.uuid4().hex[:12]}"
        bundle = self.work / cid
        bundle.mkdir()
        (bundle / "config.json").write_text(
            json.dumps(runtime_config(self.image, port, self.rootfs))
        )
        # -d: the runtime sets the container up, starts it and exits; nothing stays behind.
        # The container inherits the runtime's stdio: a file, not a pipe nobody would close.
        log = bundle / "output.log"
        with log.open("wb") as out:
            code = subprocess.run(
                self._cmd("run", "-d", "--bundle", str(bundle), cid),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            ).returncode
        if code != 0:
            detail = log.read_text(errors="replace").strip()
            shutil.rmtree(bundle, ignore_errors=True)
            raise RuntimeError(f"{self.runtime} run failed: {detail}")
        pid = int(json.loads(_check(self._cmd("state", cid)))["pid"])

        def stop() -> None:
            subprocess.run(self._cmd("delete", "--force", cid), capture_output=True)
            shutil.rmtree(bundle, ignore_errors=True)

        return Running(port, lambda: [pid], stop)


class PodmanForm:
    """podman with a bridge network publishing the port (its default runtime, except on a
    cgroup-hybrid host, see :meth:`prepare`)."""

    key = "container-podman"

    def __init__(self, oci: OciImage) -> None:
        self.oci = oci
        self.ref = ""
        self.runtime_flag: list[str] = []
        self.label = "container (podman, bridge network, -p)"

    def prepare(self) -> dict[str, object]:
        if shutil.which("podman") is None:
            raise RuntimeError("podman is not installed (apt-get install podman)")
        out = _check(["podman", "pull", "-q", f"oci:{self.oci.layout}:{self.oci.tag}"])
        self.ref = out.strip().splitlines()[-1]
        # podman starts crun from its own mount namespace, where crun 1.8 refuses a
        # cgroup-hybrid host: there podman drives runc instead.
        self.runtime_flag = ["--runtime", "runc"] if cgroup_hybrid() else []
        info = json.loads(_check(["podman", *self.runtime_flag, "info", "--format", "json"]))
        runtime = info.get("host", {}).get("ociRuntime", {}).get("name", "?")
        driver = info.get("store", {}).get("graphDriverName", "?")
        self.label = f"container (podman + {runtime}, bridge network, -p)"
        return {
            "runtime": _check(["podman", "--version"]).strip(),
            "oci_runtime": runtime,
            "storage_driver": driver,
        }

    def start(self, port: int) -> Running:
        cid = _check(
            [
                "podman",
                *self.runtime_flag,
                "run",
                "-d",
                "--rm",  # nothing stays behind, also when the start fails
                *_PODMAN_RUN,
                "-p",
                f"127.0.0.1:{port}:8080",
                self.ref,
            ]
        ).strip()
        inspect = json.loads(_check(["podman", "inspect", cid]))[0]["State"]
        pids = [int(inspect["ConmonPid"]), int(inspect["Pid"])]

        def stop() -> None:
            subprocess.run(["podman", "rm", "-f", "-t", "0", cid], capture_output=True)

        return Running(port, lambda: pids, stop)

    def close(self) -> None:
        """Remove the image pulled into podman's storage by :meth:`prepare`."""
        if self.ref:
            subprocess.run(["podman", "rmi", "-f", self.ref], capture_output=True)
