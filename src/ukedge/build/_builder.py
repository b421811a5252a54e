"""``ukedge build``: turn a directory with a Ukfile into an image in the local store.

An image is built for one platform (linux/amd64 or linux/arm64; another architecture than the
host's is cross-built: kernel, init and static apps with Debian's cross gcc, the python runtime
from Debian's packages of that architecture). It is three layers, in boot order: the kernel
(gzip of the PVH ``vmlinux``; of the arm64 ``Image``), the runtime
(an initrd with ukedge's init, the skeleton it mounts on and, for python, the pruned CPython) and
the app (an initrd with the application's files). Kernel and runtime are built once per set of
inputs and cached under :func:`ukedge.paths.cache_dir`, so rebuilding an app only re-archives its
own files. Every byte of every layer, the config and the manifest is a function of the inputs
(sorted cpio entries, fixed owners and mtime, fixed gzip header, canonical JSON), so building the
same directory twice gives the same manifest digest.

All checks and all layer files come first, in a scratch directory; the store is touched only at
the end, under its lease, so a failed or interrupted build leaves the store as it was.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from ukedge import paths
from ukedge.build._files import AppFile
from ukedge.build._layers import LayerCache, LayerFile, gzip_layer, initrd_layer, layer_format_key
from ukedge.build._memory import boot_memory
from ukedge.build._pip import install_requirements
from ukedge.build._plan import PYTHON_PACKAGES_DIR, Plan, image_config, resolve_plan
from ukedge.build._python import (
    PythonInstall,
    add_python_runtime,
    compile_tree,
    find_python,
    python_runtime_key,
    stage_python_runtime,
)
from ukedge.build._python_debs import foreign_python
from ukedge.build._static import compile_static
from ukedge.build._toolchain import is_native
from ukedge.errors import BuildError, UkfileError
from ukedge.guest import CpioArchive
from ukedge.image import (
    Descriptor,
    ImageConfig,
    ImageManifest,
    ImageStore,
    Platform,
    host_platform,
    mediatypes,
)
from ukedge.types import ProgressCallback

__all__ = [
    "PYTHON_PACKAGES_DIR",
    "BuildProgress",
    "BuildResult",
    "LayerReport",
    "Stage",
    "build_image",
]

log = logging.getLogger(__name__)

Stage = Literal["kernel", "runtime", "app", "write"]
#: ``progress(stage, event, detail)`` with event "start", "cached" or "done".
BuildProgress = Callable[[Stage, Literal["start", "cached", "done"], str], None]

_TITLE = "org.opencontainers.image.title"
_CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class LayerReport:
    """One layer of a built image: its role, blob and sizes, and whether it came from cache."""

    role: Literal["kernel", "runtime", "app"]
    media_type: str
    digest: str
    size: int
    uncompressed_size: int
    cached: bool


@dataclass(frozen=True)
class BuildResult:
    """What ``build_image`` stored: the manifest digest and everything a report shows."""

    digest: str
    tags: list[str]
    manifest: ImageManifest
    config: ImageConfig
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def id(self) -> str:
        """Docker-style short id: the first 12 hex digits of the manifest digest."""
        return self.digest.split(":", 1)[1][:12]

    @property
    def size(self) -> int:
        """Compressed size of config and layers, as a registry transfers it."""
        return self.manifest.config.size + sum(layer.size for layer in self.layers)


def _noop(stage: Stage, event: Literal["start", "cached", "done"], detail: str) -> None:
    pass


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_image(
    context: Path,
    tags: Sequence[str] = (),
    *,
    store: ImageStore,
    progress: BuildProgress | None = None,
    kernel_progress: ProgressCallback | None = None,
    cache: Path | None = None,
    platform: Platform | None = None,
    tag: bool = True,
) -> BuildResult:
    """Build the image described by ``context/Ukfile`` for ``platform`` (default: this host's)
    and tag it ``tags`` (default ``<app.name>:latest``) in ``store``: one single-platform
    manifest (a multi-platform index is composed of several such builds).

    ``progress`` hears about each stage; ``kernel_progress`` gets the kernel build's
    ``(done, total)`` when the profile is not built yet (minutes, once per machine). Without
    ``tag`` the manifest is stored untagged (a platform of a multi-platform build, which tags
    the index; the caller holds the store's lease until then).
    """
    report = progress or _noop
    target = platform if platform is not None else host_platform()
    target.machine  # noqa: B018 -- an ImageError now for a platform ukedge cannot run
    plan = resolve_plan(context, tags, target)
    cache_root = Path(cache) if cache is not None else paths.cache_dir()
    layer_cache = LayerCache(cache_root / "layers")
    fmt = layer_format_key()

    from ukedge.kernel import ensure_kernel  # the kernel package builds on image, not on build

    report("kernel", "start", plan.uk.kernel.profile)
    kernel = ensure_kernel(plan.uk.kernel.profile, progress=kernel_progress, platform=target)
    boot = kernel.boot_image
    vst = boot.stat()
    kernel_key = _hash("kernel", fmt, kernel.key, str(vst.st_size), str(vst.st_mtime_ns))
    kernel_layer, kernel_cached = layer_cache.get_or_build(
        "kernel", kernel_key, lambda dest: gzip_layer(boot, dest, mediatypes.KERNEL_GZIP)
    )
    report("kernel", "cached" if kernel_cached else "done", f"{kernel.profile} {kernel.version}")

    report("runtime", "start", plan.uk.app.runtime)
    py = _python_for(target, cache_root) if plan.uk.app.runtime == "python" else None
    runtime_layer, runtime_cached = _runtime_layer(layer_cache, fmt, py, target)
    report("runtime", "cached" if runtime_cached else "done", plan.uk.app.runtime)

    with tempfile.TemporaryDirectory(prefix="ukedge-build-") as tmp:
        scratch = Path(tmp)
        report("app", "start", plan.uk.app.name)
        app_layer = _app_layer(plan, py, scratch, cache_root, target)
        report("app", "done", _app_summary(plan))

        memory_mib, min_memory_mib = _memory_mib(plan, vst.st_size, runtime_layer, app_layer)
        config = image_config(
            plan, kernel.profile, kernel.version, kernel.cmdline, memory_mib, target
        )
        config = ImageConfig.model_validate(
            config.model_dump() | {"min_memory_mib": min_memory_mib}
        )
        config_bytes = config.to_json()
        layers = [kernel_layer, runtime_layer, app_layer]
        annotations = {_TITLE: plan.uk.app.name}
        if config.created:
            annotations[_CREATED] = config.created
        manifest = ImageManifest(
            artifactType=mediatypes.ARTIFACT_TYPE,
            config=Descriptor(
                mediaType=mediatypes.CONFIG,
                digest=_sha256(config_bytes),
                size=len(config_bytes),
            ),
            layers=[
                Descriptor(mediaType=lf.media_type, digest=lf.digest, size=lf.size) for lf in layers
            ],
            annotations=annotations,
        )
        manifest_bytes = manifest.to_json()

        report("write", "start", ", ".join(plan.tags))
        with store.lease():
            for lf in layers:
                if not store.has_blob(lf.digest):
                    desc = store.put_file(lf.path, lf.media_type)
                    if desc.digest != lf.digest:
                        raise BuildError(f"{lf.path} changed while it was stored; build again")
            store.put_bytes(config_bytes, mediatypes.CONFIG)
            desc = store.add_manifest(manifest_bytes, plan.tags[0] if tag else None)
            for ref in plan.tags[1:] if tag else ():
                store.add_manifest(manifest_bytes, ref)
        report("write", "done", desc.digest)

    roles: tuple[Literal["kernel", "runtime", "app"], ...] = ("kernel", "runtime", "app")
    cached = (kernel_cached, runtime_cached, False)
    return BuildResult(
        digest=desc.digest,
        tags=plan.tags,
        manifest=manifest,
        config=config,
        layers=[
            LayerReport(role, lf.media_type, lf.digest, lf.size, lf.uncompressed_size, c)
            for role, lf, c in zip(roles, layers, cached, strict=True)
        ],
    )


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _platform_key(platform: Platform) -> str:
    from ukedge.build import guest

    init = guest.ensure_init(platform)
    sources = sorted(Path(guest.__file__).parent.glob("*.py"))
    return _hash("platform", _file_hash(init), *(_file_hash(p) for p in sources))


def _python_for(platform: Platform, cache_root: Path) -> PythonInstall:
    """The host's CPython for a native build, Debian's packages of ``platform`` otherwise."""
    if is_native(platform):
        return find_python()
    return foreign_python(platform, cache_root / "python-root")


def _runtime_layer(
    cache: LayerCache, fmt: str, py: PythonInstall | None, platform: Platform
) -> tuple[LayerFile, bool]:
    from ukedge.build.guest import add_platform

    if py is None:
        key = _hash("runtime-static", fmt, _platform_key(platform))

        def build(dest: Path) -> LayerFile:
            archive = CpioArchive()
            add_platform(archive, platform)
            return initrd_layer(archive, dest, mediatypes.INITRD_GZIP)

        return cache.get_or_build("runtime-static", key, build)

    key = _hash("runtime-python", fmt, _platform_key(platform), python_runtime_key(py))

    def build_python(dest: Path) -> LayerFile:
        staged = dest.parent / "python"
        stage_python_runtime(py, staged)
        archive = CpioArchive()
        add_platform(archive, platform)
        add_python_runtime(archive, staged)
        layer = initrd_layer(archive, dest, mediatypes.INITRD_GZIP)
        shutil.rmtree(staged)
        return layer

    return cache.get_or_build("runtime-python", key, build_python)


def _app_summary(plan: Plan) -> str:
    """What the app layer holds, for the progress line: a static app's binary is in it too."""
    count = len(plan.files)
    files = f"{count} file{'' if count == 1 else 's'}"
    if plan.uk.app.runtime != "static":
        return files
    binary = plan.binary.name if plan.binary is not None else plan.uk.app.name
    return f"{binary} (static binary)" + (f" and {files}" if count else "")


def _app_layer(
    plan: Plan, py: PythonInstall | None, scratch: Path, cache_root: Path, platform: Platform
) -> LayerFile:
    uk = plan.uk
    archive = CpioArchive()
    app_dir = PurePosixPath(uk.files.dest)
    archive.add_dir(str(app_dir))
    archive.add_dir(uk.app.workdir)
    if uk.app.runtime == "static":
        assert uk.static is not None
        if plan.binary is not None:
            archive.add_file(str(app_dir / plan.binary.name), plan.binary, 0o755)
        else:
            out = scratch / uk.app.name
            compile_static(
                plan.context,
                uk.static.sources,
                out,
                cflags=uk.static.cflags,
                ldflags=uk.static.ldflags,
                ukfile=plan.ukfile,
                platform=platform,
            )
            archive.add_file(str(app_dir / uk.app.name), out, 0o755)
        for f in plan.files:
            _add_app_file(archive, f)
    else:
        assert py is not None
        # Staged so the app's modules can be precompiled next to their sources: imports in the
        # guest then skip the compiler (and cannot write a cache into a RAM root anyway).
        staged = scratch / "app"
        for f in plan.files:
            target = staged / f.dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.source.is_symlink():
                target.symlink_to(f.source.readlink())
            else:
                shutil.copyfile(f.source, target)
                shutil.copymode(f.source, target)
        if plan.requirements:
            packages = install_requirements(
                plan.requirements,
                cache_root / "python-packages",
                ukfile=plan.ukfile,
                field="python.requirements",
            )
            target = staged / PYTHON_PACKAGES_DIR.lstrip("/")
            shutil.copytree(
                packages,
                target,
                symlinks=True,
                ignore=shutil.ignore_patterns(".complete", "__pycache__"),
            )
        if any(staged.rglob("*.py")):
            compile_tree(py, staged, "/", drop_sources=False)
        archive.add_tree(staged, "/")
    return initrd_layer(archive, scratch / "app.cpio.gz", mediatypes.INITRD_GZIP)


def _add_app_file(archive: CpioArchive, f: AppFile) -> None:
    if f.source.is_symlink():
        archive.add_symlink(f.dest, str(f.source.readlink()))
    else:
        mode = 0o755 if f.source.stat().st_mode & 0o111 else 0o644
        archive.add_file(f.dest, f.source, mode)


def _memory_mib(plan: Plan, kernel_size: int, *initrds: LayerFile) -> tuple[int, int]:
    """``(memory, minimum)`` for the config: the Ukfile's memory if it is enough to boot, else
    an error; without one, the computed default (see ``_memory``).

    A guest that is short fails at boot with a message no user connects to the Ukfile, so the
    build refuses it here, where the fix is one line.
    """
    need = boot_memory(
        kernel_size, [layer.size for layer in initrds], sum(lf.rootfs_size for lf in initrds)
    )
    given = plan.uk.resources.memory_mib
    if given is None:
        return need.default_mib, need.minimum_mib
    if given < need.minimum_mib:
        raise UkfileError(
            plan.ukfile,
            "resources.memory",
            f"{plan.uk.resources.memory} is too small to boot this image: it needs at least "
            f"{need.minimum_mib}M (its files take {need.unpacked / (1 << 20):.1f} MiB unpacked "
            "in a root the kernel limits to half the RAM it has left after its own image and "
            f'the compressed layers); set memory = "{need.default_mib}M" or leave it out',
        )
    return given, need.minimum_mib
