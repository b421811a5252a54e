"""Building a kernel profile from Debian's linux-source, cached by a key over its inputs.

The build extracts the source tarball into a temporary directory next to the cache, runs
``make tinyconfig`` for the target architecture (arm64 with Debian's cross compiler,
``aarch64-linux-gnu-``), merges the profile fragment, checks that kconfig kept every requested
option (a dropped one means a missing dependency, which would otherwise surface as a VM that
cannot see its disk or network), builds ``vmlinux`` and the boot image (``bzImage``; the
arm64 ``Image``) with all cores, and renames the finished directory into place. A second call
with the same inputs returns at once. Each architecture's toolchain is in :mod:`._toolchain`,
running one step with its log and progress in :mod:`._runner`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ukedge import paths
from ukedge.errors import KernelError
from ukedge.image import Platform, host_platform
from ukedge.kernel import _toolchain
from ukedge.kernel._profiles import Profile, load_profile
from ukedge.kernel._runner import Runner
from ukedge.types import ProgressCallback

__all__ = ["DEFAULT_SOURCE", "Kernel", "ensure_kernel", "kernel_key", "list_kernels", "source"]

log = logging.getLogger(__name__)

#: Debian's ``linux-source-6.1`` package installs this tarball.
DEFAULT_SOURCE = Path("/usr/src/linux-source-6.1.tar.xz")
#: Bump when the build procedure changes in a way that changes its output.
_RECIPE = "ukedge-kernel-recipe-1"
_META = "kernel.json"
#: Compile steps of a minimal build, until a real build on this machine says better.
_DEFAULT_UNITS = 700


@dataclass(frozen=True)
class Kernel:
    """A built kernel profile in the cache."""

    profile: str
    #: Upstream version of the source, e.g. ``6.1.192``.
    version: str
    #: Hex hash of every input that changes the build; names the cache directory.
    key: str
    #: Uncompressed, stripped ELF with the PVH note (QEMU ``-kernel`` boots it directly).
    vmlinux: Path
    #: The boot loader's kernel: the compressed bzImage for loaders without PVH on x86_64;
    #: the uncompressed ``Image`` (what QEMU's ``virt`` machine boots) on arm64.
    bzimage: Path
    #: Base kernel command line this profile wants (console, quiet, reset behaviour).
    cmdline: str
    #: OCI architecture (``amd64``, ``arm64``).
    architecture: str = "amd64"

    @property
    def boot_image(self) -> Path:
        """What QEMU's ``-kernel`` takes: the PVH vmlinux on x86_64, the Image on arm64."""
        return self.vmlinux if self.architecture == "amd64" else self.bzimage


def source() -> Path:
    """The kernel source tarball: ``$UKEDGE_KERNEL_SOURCE`` or Debian's linux-source-6.1."""
    explicit = os.environ.get("UKEDGE_KERNEL_SOURCE")
    path = Path(explicit) if explicit else DEFAULT_SOURCE
    if not path.is_file():
        raise KernelError(
            f"kernel source {path} not found; install it with `apt-get install linux-source-6.1` "
            "or point UKEDGE_KERNEL_SOURCE at a linux-*.tar.xz"
        )
    return path


def kernel_key(profile: Profile, tarball: Path) -> str:
    """Hash of source identity, effective fragment, compiler, recipe and architecture.

    amd64 adds nothing for its architecture: its keys stay those of the builds made before
    other architectures existed (its compiler, and every other's fragment, differ anyway).
    """
    st = tarball.stat()
    h = hashlib.sha256()
    parts = [
        _RECIPE,
        f"{tarball.name}:{st.st_size}:{st.st_mtime_ns}",
        profile.name,
        profile.effective(),
        _toolchain.compiler_id(profile.architecture),
    ]
    if profile.architecture != "amd64":
        parts.append(f"architecture={profile.architecture}")
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


def _from_meta(directory: Path) -> Kernel | None:
    try:
        meta = json.loads((directory / _META).read_text())
        architecture = str(meta.get("architecture", "amd64"))
        kernel = Kernel(
            profile=meta["profile"],
            version=meta["version"],
            key=meta["key"],
            vmlinux=directory / "vmlinux",
            bzimage=directory / _toolchain.TARGETS[architecture].image_name,
            cmdline=meta["cmdline"],
            architecture=architecture,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (kernel.vmlinux.is_file() and kernel.bzimage.is_file()):
        return None
    return kernel


def list_kernels() -> list[Kernel]:
    """Every complete kernel in the cache, by profile then version."""
    root = paths.kernels_dir()
    if not root.is_dir():
        return []
    found = [k for d in root.iterdir() if not d.name.startswith(".") and (k := _from_meta(d))]
    return sorted(found, key=lambda k: (k.profile, k.architecture, k.version, k.key))


def ensure_kernel(
    profile: str = "minimal",
    *,
    progress: ProgressCallback | None = None,
    force: bool = False,
    platform: Platform | None = None,
) -> Kernel:
    """The built kernel for ``profile`` and ``platform`` (default: this host's), building it
    first when the cache lacks it."""
    architecture = (platform or host_platform()).architecture
    _toolchain.target(architecture)
    prof = load_profile(profile, architecture)
    tarball = source()
    key = kernel_key(prof, tarball)
    root = paths.kernels_dir()
    final = root / key
    if not force and (cached := _from_meta(final)):
        return _current_cmdline(cached, prof)
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / f".{key}.lock"):
        if not force and (cached := _from_meta(final)):  # built by someone we waited for
            return _current_cmdline(cached, prof)
        _build(prof, tarball, key, final, progress)
    built = _from_meta(final)
    if built is None:
        raise KernelError(f"kernel build for {profile} finished but {final} is incomplete")
    return built


def _current_cmdline(kernel: Kernel, prof: Profile) -> Kernel:
    """The command line is not part of the key (tuning it needs no rebuild), so a cached build
    takes the profile's current one, recorded so that ``list_kernels`` agrees."""
    if kernel.cmdline == prof.cmdline:
        return kernel
    meta_path = kernel.vmlinux.parent / _META
    meta = json.loads(meta_path.read_text())
    meta["cmdline"] = prof.cmdline
    tmp = meta_path.with_name(f".{_META}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(meta_path)
    return Kernel(**{**asdict(kernel), "cmdline": prof.cmdline})


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _units_file() -> Path:
    return paths.kernels_dir() / "units.json"


def _units_name(prof: Profile) -> str:
    return prof.name if prof.architecture == "amd64" else f"{prof.name}.{prof.architecture}"


def _expected_units(profile: str) -> int:
    try:
        return int(json.loads(_units_file().read_text())[profile])
    except (OSError, ValueError, KeyError, TypeError):
        return _DEFAULT_UNITS


def _remember_units(profile: str, units: int) -> None:
    try:
        known = json.loads(_units_file().read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    known[profile] = units
    tmp = _units_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(known, sort_keys=True))
    tmp.replace(_units_file())


def _build(
    prof: Profile, tarball: Path, key: str, final: Path, progress: ProgressCallback | None
) -> None:
    root = final.parent
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{prof.name}-{key}.log"
    work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
    src = work / "src"
    out = work / "out"
    src.mkdir()
    out.mkdir()
    total = _expected_units(_units_name(prof))
    target = _toolchain.target(prof.architecture)
    cross = _toolchain.cross_prefix(prof.architecture)
    make = ["make", f"ARCH={target.arch}"] + ([f"CROSS_COMPILE={cross}"] if cross else [])
    if progress:
        progress(0, total)
    env = {
        **os.environ,
        "LC_ALL": "C",
        "ARCH": target.arch,
        # Reproducible: the same inputs give the same kernel bytes on any machine.
        "KBUILD_BUILD_TIMESTAMP": "1970-01-01",
        "KBUILD_BUILD_USER": "ukedge",
        "KBUILD_BUILD_HOST": "ukedge",
        "KBUILD_BUILD_VERSION": "1",
    }
    try:
        with log_path.open("w") as logf:
            runner = Runner(logf, log_path, env, src)
            runner.run(["tar", "-xf", str(tarball), "-C", str(src), "--strip-components=1"])
            version = _source_version(src)
            fragment = work / f"{prof.name}.config"
            fragment.write_text(prof.text)
            runner.run([*make, "tinyconfig"])
            runner.run(["scripts/kconfig/merge_config.sh", "-m", ".config", str(fragment)])
            runner.run([*make, "olddefconfig"])
            _verify_config(prof, src / ".config", log_path)
            jobs = str(os.cpu_count() or 1)
            units = runner.run(
                [*make, f"-j{jobs}", "vmlinux", target.image_target],
                progress=progress,
                total=total,
            )
            runner.run([f"{cross}strip", "--strip-all", "-o", str(out / "vmlinux"), "vmlinux"])
            shutil.copyfile(src / target.image_path, out / target.image_name)
            shutil.copyfile(src / ".config", out / "config")
            # Symbols for reading oopses and for sampling boot profiles (RIP -> function).
            shutil.copyfile(src / "System.map", out / "System.map")
        shutil.copyfile(log_path, out / "build.log")
        meta = {
            "profile": prof.name,
            "version": version,
            "key": key,
            "cmdline": prof.cmdline,
            "source": str(tarball),
        }
        if prof.architecture != "amd64":
            meta["architecture"] = prof.architecture
        (out / _META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if final.exists():  # --force: swap the old build out, then drop it
            final.rename(work / "old")
        out.rename(final)
        _remember_units(_units_name(prof), units)
        if progress:
            progress(units, units)
        log.info("built kernel %s %s (%s) in %s", prof.name, prof.architecture, version, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _source_version(src: Path) -> str:
    fields: dict[str, str] = {}
    with (src / "Makefile").open() as f:
        for line in f:
            m = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)", line)
            if m:
                fields[m.group(1)] = m.group(2)
            if len(fields) == 4:
                break
    try:
        return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields['SUBLEVEL']}" + fields.get(
            "EXTRAVERSION", ""
        )
    except KeyError:
        raise KernelError(f"cannot read the kernel version from {src / 'Makefile'}") from None


def _verify_config(prof: Profile, config: Path, log_path: Path) -> None:
    """Fail naming every option kconfig did not keep as the fragment asked."""
    actual: dict[str, str] = {}
    for line in config.read_text().splitlines():
        m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
        if m:
            actual[m.group(1)] = m.group(2)
    dropped = [
        f"{name} (wanted {want}, got {actual.get(name, 'n')})"
        for name, want in prof.options.items()
        if actual.get(name, "n") != want
    ]
    if dropped:
        raise KernelError(
            f"kconfig did not keep {len(dropped)} option(s) of profile {prof.name} "
            f"(a dependency is missing or the option does not exist): {', '.join(dropped)}; "
            f"log: {log_path}"
        )
