"""Images built for linux/arm64 on this machine: cross-built layers of the right architecture,
the arm64 config and boot protocol, the same digest on a rebuild, and a prebuilt binary of the
wrong architecture refused before anything is written."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from kit.cpio import cpio_members
from ukedge.build import build_image
from ukedge.build._elf import elf_machine
from ukedge.build._plan import resolve_plan
from ukedge.errors import UkfileError
from ukedge.image import ImageStore, parse_platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARM64 = parse_platform("linux/arm64")


def _entries(store: ImageStore, digest: str) -> dict[str, tuple[int, bytes, int, int]]:
    return cpio_members(gzip.decompress(store.read_blob(digest)))


def _machine_of(data: bytes, tmp_path: Path) -> str | None:
    path = tmp_path / "elf"
    path.write_bytes(data)
    return elf_machine(path)


def test_a_prebuilt_binary_of_another_architecture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Ukfile").write_text(
        "[app]\nname = 'pre'\nruntime = 'static'\n[static]\nbinary = 'tool'\n"
    )
    (tmp_path / "t.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(
        ["gcc", "-static", "-o", str(tmp_path / "tool"), str(tmp_path / "t.c")], check=True
    )
    with pytest.raises(
        UkfileError, match=r"static\.binary: .*an x86_64 binary, but the image is for aarch64"
    ):
        resolve_plan(tmp_path, [], ARM64)
    resolve_plan(tmp_path, [], parse_platform("linux/amd64"))  # the host's own: fine


@pytest.mark.foreign_arch
def test_arm64_hello_c(arm64_example_store: Path, tmp_path: Path) -> None:
    store = ImageStore(arm64_example_store)
    image, manifest = store.manifest("hello-c:1")
    config = store.config(manifest)
    assert (config.os, config.architecture) == ("linux", "arm64")
    assert config.platform.machine == "aarch64"
    assert config.boot.protocol == "linux-arm64-image"
    assert "console=ttyAMA0" in config.boot.cmdline.split()
    kernel, runtime, app = manifest.layers
    header = gzip.decompress(store.read_blob(kernel.digest))[:64]
    assert header[56:60] == b"ARM\x64", "the kernel layer is not an arm64 Image"
    assert _machine_of(_entries(store, runtime.digest)["init"][1], tmp_path) == "aarch64"
    assert _machine_of(_entries(store, app.digest)["app/hello-c"][1], tmp_path) == "aarch64"
    # Reproducible per platform: a rebuild into another store gives the same digest.
    again = build_image(
        EXAMPLES / "hello-c", ["hello-c:1"], store=ImageStore(tmp_path / "s"), platform=ARM64
    )
    assert again.digest == image.digest


@pytest.mark.foreign_arch
def test_arm64_sensor_agg(arm64_example_store: Path, tmp_path: Path) -> None:
    store = ImageStore(arm64_example_store)
    image, manifest = store.manifest("sensor-agg:1")
    runtime = _entries(store, manifest.layers[1].digest)
    assert _machine_of(runtime["usr/bin/python3.11"][1], tmp_path) == "aarch64"
    assert any(name.startswith("lib/aarch64-linux-gnu/libc.so") for name in runtime)
    assert not any("x86_64" in name for name in runtime)
    again = build_image(
        EXAMPLES / "sensor-agg", ["sensor-agg:1"], store=ImageStore(tmp_path / "s"), platform=ARM64
    )
    assert again.digest == image.digest
    # The app layer holds only bytecode and sources: the same blob as the x86_64 build's.
    amd64 = build_image(EXAMPLES / "sensor-agg", ["x:1"], store=ImageStore(tmp_path / "x"))
    assert amd64.layers[2].digest == manifest.layers[2].digest
    assert amd64.layers[1].digest != manifest.layers[1].digest
