"""One comparison run: prepare every form from the same app, measure each the same way, return
the raw figures (what ``report`` renders and the JSON keeps).

A form that cannot run here (a runtime not installed, crun refusing the host) is recorded with
the reason instead of figures; the run goes on with the others. Every instance started is
stopped, also when a measurement fails or the run is interrupted (the loops in
:mod:`compare._measure` stop what they started in ``finally``).
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _common import bench_home, instance_manager

from compare._container import PodmanForm, RuntimeForm
from compare._forms import FullVmForm, ProcessForm, UnikernelForm
from compare._fullvm import build_fullvm
from compare._measure import Form, cpu_model, density, start_runs
from compare._oci import OciImage, unpack, unpack_cpio, write_layout
from compare._surface import du, kernel_options, seccomp_allowed, tree_counts
from ukedge import paths, vmm
from ukedge.build import BuildResult, build_image
from ukedge.image import ImageStore
from ukedge.kernel import list_kernels

__all__ = ["Settings", "run_compare"]

IMAGE = "sensor-agg:compare"
SECCOMP = Path("/usr/share/containers/seccomp.json")


@dataclass(frozen=True)
class Settings:
    app: Path
    runs: int
    out: Path
    short: bool
    #: Density caps per form family (instances started at most).
    cap_light: int = 16  # process, containers
    cap_unikernel: int = 8
    cap_fullvm: int = 2
    #: A full VM boot is a minute or more under TCG on a loaded machine: fewer sampled runs.
    runs_fullvm: int = 3
    settle: float = 2.0
    fullvm_memory_mib: int = 256


def _unikernel_artefact(store: ImageStore, build: BuildResult, work: Path) -> dict[str, object]:
    layers = build.layers
    tree = work / "unikernel-initrd"
    for layer in layers:
        if layer.role != "kernel":
            unpack_cpio(store.blob_path(layer.digest), tree / layer.role, drop=())
    config = build.config
    kernel = next(
        k
        for k in list_kernels()
        if k.profile == config.kernel.profile and k.version == config.kernel.version
    )
    options = kernel_options(kernel.vmlinux.parent / "config")
    counts = tree_counts(tree)
    return {
        "compressed": build.size,
        # what a node keeps unpacked: the kernel and the initrd layers, uncompressed
        "on_disk": sum(layer.uncompressed_size for layer in layers),
        "files": counts["files"] + 1,  # + the kernel
        "executables": counts["executables"] + 1,
        "kernel_options": options["enabled"],
        "kernel_options_detail": options,
        "layers": {layer.role: layer.size for layer in layers},
    }


def _container_artefact(oci: OciImage, rootfs: Path, seccomp: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "compressed": oci.compressed,
        "on_disk": du(rootfs),
        **tree_counts(rootfs),
        "kernel_options": None,  # the host's kernel, shared
    }
    if seccomp and SECCOMP.is_file():
        allowed = seccomp_allowed(SECCOMP)
        out["syscalls"] = allowed["unconditional"]
        out["syscalls_detail"] = allowed
    else:
        out["syscalls_note"] = "no seccomp filter in the runtime config (as `runc spec`)"
    return out


def run_compare(s: Settings, say: Callable[[str], None]) -> dict[str, object]:
    work = s.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench_home(work)
    store = ImageStore(work / "store")
    say(f"building {s.app} as a unikernel image")
    build = build_image(s.app, [IMAGE], store=store)
    verdict = vmm.probe_accelerator()
    manager = instance_manager(work / "instances", store)
    unikernel = _unikernel_artefact(store, build, work)
    initrds = [store.blob_path(x.digest) for x in build.layers if x.role != "kernel"]
    env = dict(build.config.env)
    say("writing the OCI image layout from the same layers")
    oci = write_layout(initrds, list(build.config.entrypoint), env, work / "oci")
    oci_rootfs = work / "oci-rootfs"  # what every container row's runtime unpacks
    unpack(oci.layout, oci.tag, oci_rootfs)

    forms: list[tuple[Form, int]] = [(ProcessForm(s.app, work), s.cap_light)]
    forms += [
        (UnikernelForm(manager, IMAGE, unikernel, resumed=False), s.cap_unikernel),
        (UnikernelForm(manager, IMAGE, unikernel, resumed=True), s.cap_unikernel),
    ]
    runtimes = ["runc"] if s.short else ["runc", "crun"]
    forms += [(RuntimeForm(r, oci, work), s.cap_light) for r in runtimes]
    if not s.short:
        forms.append((PodmanForm(oci), s.cap_light))
        say("full VM: the Debian image (cached after its first build)")
        image = build_fullvm(s.app, paths.cache_dir() / "compare", say=say)
        forms.append((FullVmForm(image, verdict.accel, s.fullvm_memory_mib, 1, work), s.cap_fullvm))

    load_before = os.getloadavg()
    results: list[dict[str, object]] = []
    for form, cap in forms:
        say(f"{form.key}: preparing")
        row: dict[str, object] = {"key": form.key, "label": form.label}
        try:
            info = form.prepare()
            if isinstance(form, RuntimeForm | PodmanForm):
                seccomp = isinstance(form, PodmanForm)
                info = {**info, **_container_artefact(oci, oci_rootfs, seccomp=seccomp)}
            row["artefact"] = info
            row["label"] = form.label
            deadline = 600.0 if form.key == "full-vm" else 180.0
            runs = min(s.runs, s.runs_fullvm) if form.key == "full-vm" else s.runs
            row["runs"] = runs
            row.update(start_runs(form, runs, settle=s.settle, deadline_s=deadline, say=say))
            row["density"] = density(
                form, 2 if s.short else cap, settle=s.settle, deadline_s=deadline, say=say
            )
        except Exception as exc:  # recorded, and the other forms still run
            say(f"{form.key}: not measured: {exc}")
            row["error"] = str(exc)
        finally:
            if isinstance(form, PodmanForm):
                form.close()
        results.append(row)
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)  # the store, layout and bundles: gigabytes
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "memory": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        },
        "accelerator": verdict.accel,
        "accelerator_reason": verdict.reason,
        "load_average": {"before": load_before[0], "after": load_after[0]},
        "runs": s.runs,
        "short": s.short,
        "settle_s": s.settle,
        "budget": 2 << 30,
        "app": s.app.name,
        "forms": results,
    }
