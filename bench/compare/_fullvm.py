"""The full-VM form: a Debian bookworm root with systemd, made by debootstrap, running the same
app as a systemd service, booted by the same QEMU binary and accelerator as the unikernel.

The image is built once and cached under ``<ukedge cache>/compare/fullvm-<key>/`` (the key
hashes the recipe below and the app's files): a build is minutes of downloads and package
set-up. It is written to a scratch directory beside the cache entry and renamed into place only
when complete, so an interrupted build leaves nothing that looks finished.

The machine boots the Debian kernel and initramfs directly (``-kernel``/``-initrd``, as QEMU
does for the unikernel) from a qcow2 disk holding the whole root; there is no boot loader, which
spares the full VM the firmware's disk probe and GRUB's menu (a fair floor, not a handicap).
Every instance opens the disk with ``snapshot=on``: writes go to a throw-away overlay, so one
cached image serves any number of instances.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FULLVM_PACKAGES", "FullVmImage", "build_fullvm", "debian_mirror"]

#: Packages added to debootstrap's minbase: an init system, a kernel made for VMs, the
#: interpreter the app needs (Debian's own python3, the same 3.11 the unikernel's runtime is
#: cut from) and udev, which every systemd install runs.
FULLVM_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "python3",
)
SUITE = "bookworm"
GUEST_IP = "10.0.2.15"  # QEMU user networking's first guest address

_NETWORK = f"""[Match]
Name=en* eth*

[Network]
Address={GUEST_IP}/24
Gateway=10.0.2.2
"""

_UNIT = """[Unit]
Description=sensor-agg (ukedge example) as a systemd service

[Service]
ExecStart=/usr/bin/python3 -S -u /opt/app/main.py
Environment=PORT=8080 WINDOW_SECONDS=10 RESULTS_FILE=/run/sensor-agg-results.jsonl
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class FullVmImage:
    """A built image: the disk, the kernel and initramfs booted from outside it."""

    root: Path  # the cache entry
    disk: Path  # qcow2, uncompressed clusters
    disk_compressed: Path  # the same disk as compressed qcow2 (what one would ship)
    kernel: Path
    initrd: Path
    tree: Path  # the unpacked root, kept for counting files
    kernel_config: Path


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (so nothing here names a host of its own)."""
    override = os.environ.get("UKEDGE_DEBIAN_MIRROR")
    if override:
        return override
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for source in candidates:
        if not source.is_file():
            continue
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"]:  # one-line format: deb [options] URL suite components
                url = next((w for w in words if "://" in w), "")
                if url and "security" not in url:
                    return url
    raise RuntimeError(
        "no Debian mirror found in /etc/apt/sources.list*; set UKEDGE_DEBIAN_MIRROR to one"
    )


#: Bump when a build step below changes what the image holds (the package list, unit and
#: network files and the app's sources are hashed already; the QEMU command line is not part
#: of the image).
_RECIPE_VERSION = 1


def _recipe_key(app: Path) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([_RECIPE_VERSION, SUITE, FULLVM_PACKAGES, _NETWORK, _UNIT]).encode())
    for path in sorted(app.rglob("*.py")):
        h.update(path.relative_to(app).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _entry(root: Path) -> FullVmImage:
    boot = root / "tree" / "boot"
    kernel = next(boot.glob("vmlinuz-*"))
    version = kernel.name.removeprefix("vmlinuz-")
    return FullVmImage(
        root=root,
        disk=root / "disk.qcow2",
        disk_compressed=root / "disk-compressed.qcow2",
        kernel=kernel,
        initrd=boot / f"initrd.img-{version}",
        tree=root / "tree",
        kernel_config=boot / f"config-{version}",
    )


def _run(cmd: list[str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}); log {log}:\n" + "\n".join(tail))


def build_fullvm(app: Path, cache: Path, *, say: Callable[[str], None] = print) -> FullVmImage:
    """The cached image for ``app``, built first when missing (needs root and debootstrap)."""
    root = cache / f"fullvm-{_recipe_key(app)}"
    if (root / "done").is_file():
        return _entry(root)
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        raise RuntimeError(
            "building the full-VM image needs root and debootstrap (apt-get install debootstrap "
            "e2fsprogs qemu-utils; make bench-compare does this)"
        )
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".fullvm-"))
    log = scratch / "build.log"
    tree = scratch / "tree"
    say(f"full VM: debootstrap {SUITE} + systemd into {scratch} (minutes; log {log})")
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(FULLVM_PACKAGES),
            SUITE,
            str(tree),
            debian_mirror(),
        ],
        log,
    )
    # The app and its service.
    shutil.copytree(app, tree / "opt" / "app", ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "etc/systemd/system/sensor-agg.service").write_text(_UNIT)
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "sensor-agg.service").symlink_to("/etc/systemd/system/sensor-agg.service")
    (tree / "etc/systemd/network/10-qemu.network").write_text(_NETWORK)
    (wants / "systemd-networkd.service").unlink(missing_ok=True)
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    (tree / "etc/hostname").write_text("fullvm\n")
    (tree / "etc/fstab").write_text("/dev/vda / ext4 rw,relatime 0 1\n")
    # The apt lists and package cache are not part of a running system's needs.
    shutil.rmtree(tree / "var/cache/apt/archives", ignore_errors=True)
    (tree / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    # Disk: ext4 made from the tree (no mount needed), a third free for the running system.
    used = int(
        subprocess.run(
            ["du", "-sb", str(tree)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    raw = scratch / "disk.raw"
    size_mib = used * 4 // 3 // (1 << 20) + 64
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(raw), f"{size_mib}M"], log)
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(scratch / "disk.qcow2")], log)
    _run(
        [
            "qemu-img",
            "convert",
            "-c",
            "-O",
            "qcow2",
            str(raw),
            str(scratch / "disk-compressed.qcow2"),
        ],
        log,
    )
    raw.unlink()
    (scratch / "done").write_text("ok\n")
    scratch.rename(root)
    return _entry(root)


def qemu_argv(
    image: FullVmImage, *, accel: str, memory_mib: int, vcpus: int, port: int, console: Path
) -> list[str]:
    """The full VM's QEMU command: the same binary and accelerator as the unikernel's, a PC
    machine (systemd and udev expect ACPI and PCI), the disk as a throw-away overlay."""
    argv = [
        "qemu-system-x86_64",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-M",
        "pc",
    ]
    if accel == "tcg":
        argv += ["-accel", "tcg,tb-size=32", "-cpu", "max"]
    else:
        argv += ["-accel", "kvm", "-cpu", "host"]
    argv += ["-m", f"{memory_mib}M", "-smp", str(vcpus)]
    argv += ["-kernel", str(image.kernel), "-initrd", str(image.initrd)]
    argv += ["-append", "root=/dev/vda rw console=ttyS0 quiet"]
    argv += ["-drive", f"file={image.disk},if=virtio,format=qcow2,snapshot=on"]
    argv += [
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:8080",
        "-device",
        "virtio-net-pci,netdev=net0,romfile=",
    ]
    argv += [
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-pci,rng=rng0",
    ]
    argv += ["-chardev", f"file,id=console,path={console}", "-serial", "chardev:console"]
    return argv
