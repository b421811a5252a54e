"""An OCI image layout of the app, written from the unikernel image's own layers.

The container gets the very files the unikernel runs: the runtime layer (pruned CPython, its
libraries and loader) and the app layer are unpacked from the image's initrd cpio archives and
written again as two OCI tar layers, the config carries the image's entrypoint and environment.
Only the guest init (``/init``, the unikernel's PID 1) and the console node are left out: a
container runtime is what starts the app there and makes ``/dev``. Layers are deterministic
(sorted, fixed times and owners, gzip without a timestamp), so the same inputs give the same
digests, like the unikernel build.

The layout is written under a temporary name and renamed into place. :func:`unpack` reads it
back as any consumer would (index, manifest, layers, each checked against its digest) into a
runtime bundle's root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LEFT_OUT", "OciImage", "unpack", "unpack_cpio", "write_layout"]

#: Unikernel-only files not copied into the container image.
LEFT_OUT = ("init", "dev/console")
TAG = "bench"
_PATH = "/usr/local/bin:/usr/bin:/bin"

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class OciImage:
    layout: Path
    tag: str
    compressed: int  # config + layers, as a registry would transfer them
    uncompressed: int  # layer tars


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tar_layer(tree: Path) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip of it) of ``tree``'s contents, deterministic."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(tree.iterdir()):
            tar.add(entry, arcname=entry.name, filter=_reset)  # recursive adds sort too
    blob = io.BytesIO()
    with gzip.GzipFile(fileobj=blob, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return raw.getvalue(), blob.getvalue()


def unpack_cpio(blob: Path, dest: Path, drop: tuple[str, ...] = LEFT_OUT) -> None:
    """Unpack a gzip'd newc initrd layer into ``dest``, without the paths in ``drop``."""
    dest.mkdir(parents=True)
    with gzip.open(blob) as src:
        proc = subprocess.run(
            ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
            input=src.read(),
            cwd=dest,
            capture_output=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"cpio could not unpack {blob}: {proc.stderr.decode().strip()}")
    for name in drop:
        (dest / name).unlink(missing_ok=True)


def write_layout(
    initrd_layers: list[Path], entrypoint: list[str], env: dict[str, str], dest: Path
) -> OciImage:
    """Write the OCI image layout at ``dest`` (replaced if present) from the unikernel image's
    initrd layers (in boot order) and its entrypoint and environment."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        blobs = work / "layout" / "blobs" / "sha256"
        blobs.mkdir(parents=True)

        def put(data: bytes) -> str:
            digest = _sha(data)
            (blobs / digest.split(":", 1)[1]).write_bytes(data)
            return digest

        layers: list[dict[str, str | int]] = []
        diff_ids: list[str] = []
        uncompressed = 0
        for i, initrd in enumerate(initrd_layers):
            tree = work / f"tree{i}"
            unpack_cpio(initrd, tree)
            raw, gz = _tar_layer(tree)
            uncompressed += len(raw)
            diff_ids.append(_sha(raw))
            layers.append({"mediaType": LAYER, "digest": put(gz), "size": len(gz)})
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Entrypoint": entrypoint,
                    # the unikernel's init runs the entrypoint by its path; here it is looked up
                    "Env": [f"{k}={v}" for k, v in sorted({"PATH": _PATH, **env}.items())],
                    "WorkingDir": "/",
                    "ExposedPorts": {"8080/tcp": {}},
                },
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            },
            sort_keys=True,
        ).encode()
        config_desc = {"mediaType": CONFIG, "digest": put(config), "size": len(config)}
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_desc, "layers": layers},
            sort_keys=True,
        ).encode()
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MANIFEST,
                    "digest": put(manifest),
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": TAG},
                }
            ],
        }
        (work / "layout" / "index.json").write_text(json.dumps(index, sort_keys=True))
        (work / "layout" / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        if dest.exists():
            shutil.rmtree(dest)
        (work / "layout").rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    compressed = len(config) + sum(int(layer["size"]) for layer in layers)
    return OciImage(dest, TAG, compressed, uncompressed)


def _blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    if _sha(data) != digest:
        raise RuntimeError(f"{layout}: blob {digest} does not match its digest")
    return data


def unpack(layout: Path, tag: str, rootfs: Path) -> dict[str, object]:
    """Unpack ``tag``'s layers into ``rootfs``; returns the image config's ``config``."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(
        (
            m
            for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
        ),
        None,
    )
    if desc is None:
        raise RuntimeError(f"{layout} has no image tagged {tag!r}")
    manifest = json.loads(_blob(layout, desc["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    rootfs.mkdir(parents=True, exist_ok=True)
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(_blob(layout, layer["digest"])), mode="r:gz") as t:
            t.extractall(rootfs, filter="tar")
    return dict(config["config"])
