"""``ukedge build`` as a user runs it: the installed console script, a real store and kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ukedge.image import ImageStore
from ukedge.paths import store_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UKEDGE = str(Path(sys.executable).parent / "ukedge")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UKEDGE, *args], capture_output=True, text=True, timeout=900)


@pytest.mark.kernel
def test_build_prints_id_tags_and_digest() -> None:
    proc = _run("build", str(EXAMPLES / "hello-c"), "-t", "hello-c:1", "-t", "hello:latest")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    digest = lines[-1]
    assert lines[0] == f"Successfully built {digest[7:19]}"
    assert lines[1:3] == ["Successfully tagged hello-c:1", "Successfully tagged hello:latest"]
    assert "kernel" in proc.stderr and "app" in proc.stderr
    assert "hello-c (static binary)" in proc.stderr and "0 files" not in proc.stderr
    store = ImageStore(store_dir())
    assert store.resolve("hello-c:1").digest == digest == store.resolve("hello:latest").digest


@pytest.mark.kernel
def test_build_json() -> None:
    proc = _run("build", str(EXAMPLES / "hello-c"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["tags"] == ["hello-c:latest"]
    assert [layer["role"] for layer in doc["layers"]] == ["kernel", "runtime", "app"]
    assert doc["config"]["entrypoint"] == ["/app/hello-c"]
    assert doc["size"] == sum(layer["size"] for layer in doc["layers"]) + len(
        json.dumps(doc["config"], sort_keys=True, separators=(",", ":")).encode()
    )


def test_bad_ukfile_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "Ukfile").write_text(
        "[app]\nname = 'x'\nruntime = 'static'\n[resources]\n"
        "memory = '64Q'\n[static]\nsources = ['a.c']\n"
    )
    proc = _run("build", str(tmp_path), "-t", "x:1")
    assert proc.returncode == 2
    # (rich wraps long lines at the terminal width; compare the words)
    assert (
        proc.stderr.split()
        == (
            f"error: {tmp_path / 'Ukfile'}: resources.memory: invalid size '64Q': "
            "expected a number with K, M, G or T (e.g. 64M)"
        ).split()
    )
    assert proc.stdout == ""
    assert ImageStore(store_dir()).images() == []


def test_bad_tag_is_refused_before_building(tmp_path: Path) -> None:
    proc = _run("build", str(EXAMPLES / "hello-c"), "-t", "Bad Name:1")
    assert proc.returncode == 2
    assert "Bad Name:1" in proc.stderr


@pytest.mark.foreign_arch
def test_build_for_arm64(arm64_example_store: Path) -> None:
    """One other platform per build: the config says arm64 and how its kernel boots."""
    proc = _run("build", str(EXAMPLES / "hello-c"), "--platform", "linux/arm64", "--json")
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)["config"]
    assert (config["os"], config["architecture"]) == ("linux", "arm64")
    assert config["boot"]["protocol"] == "linux-arm64-image"
    built = ImageStore(store_dir()).resolve("hello-c:latest").digest
    assert built == ImageStore(arm64_example_store).resolve("hello-c:1").digest


@pytest.mark.parametrize(
    ("platform", "message"),
    [("linux/riscv64", "unsupported architecture 'riscv64'"), ("linux/aarch64", "'arm64'")],
)
def test_unknown_platform_is_refused_before_building(platform: str, message: str) -> None:
    proc = _run("build", str(EXAMPLES / "hello-c"), "--platform", platform)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not store_dir().exists() or not ImageStore(store_dir()).images()


@pytest.mark.foreign_arch
def test_build_of_two_platforms_writes_an_index_with_progress_per_platform() -> None:
    proc = _run(
        "build",
        str(EXAMPLES / "hello-c"),
        "-t",
        "hello-c:multi",
        "--platform",
        "linux/amd64,linux/arm64",
    )
    assert proc.returncode == 0, proc.stderr
    for platform in ("linux/amd64", "linux/arm64"):
        assert f"{platform} app layer" in proc.stderr
    assert "an index of 2 platforms" in proc.stdout
    store = ImageStore(store_dir())
    image = store.resolve("hello-c:multi")
    assert image.is_index and image.digest == proc.stdout.splitlines()[-1]
    listed = json.loads(_run("images", "--json").stdout)
    assert [r["platforms"] for r in listed if r["ref"] == "hello-c:multi"] == [
        ["linux/amd64", "linux/arm64/v8"]
    ]
    bad = _run("build", str(EXAMPLES / "hello-c"), "--platform", "linux/arm64,linux/arm64/v8")
    assert bad.returncode != 0 and "twice" in bad.stderr
