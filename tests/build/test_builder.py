"""Building the examples into a real store with the real kernel: reproducible digests, the OCI
structure hosts rely on, cached kernel and runtime layers, and failures that change nothing."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kit.wheel import make_wheel
from ukedge.build import BuildResult, build_image, read_elf
from ukedge.errors import BuildError, UkfileError
from ukedge.image import ImageManifest, ImageStore, mediatypes

# Every test here builds an image (the failure cases into a store that holds a built one).
pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """``{path: (mode, content)}`` of a newc archive (the format the kernel unpacks)."""
    entries: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[body : body + size])
        pos = body + size + (-size % 4)


def layer_entries(store: ImageStore, digest: str) -> dict[str, tuple[int, bytes]]:
    return read_newc(gzip.decompress(store.read_blob(digest)))


def copy_example(name: str, dest: Path) -> Path:
    """A copy with fresh file times, to show that times do not reach the image."""
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*"):
        os.utime(path, (1234567890, 1234567890))
    return target


def snapshot(store: ImageStore) -> tuple[bytes, set[str]]:
    return (store.root / "index.json").read_bytes(), {p.name for p in store.blobs_dir.iterdir()}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, BuildResult]:
    store = ImageStore(tmp_path_factory.mktemp("hello") / "store")
    return store, build_image(EXAMPLES / "hello-c", ["hello-c:1"], store=store)


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, BuildResult]:
    store = ImageStore(tmp_path_factory.mktemp("sensor") / "store")
    return store, build_image(EXAMPLES / "sensor-agg", ["sensor-agg:1"], store=store)


def test_hello_is_reproducible(hello: tuple[ImageStore, BuildResult], tmp_path: Path) -> None:
    _, first = hello
    other = ImageStore(tmp_path / "other")
    again = build_image(copy_example("hello-c", tmp_path), ["hello-c:1"], store=other)
    assert again.digest == first.digest
    assert [layer.digest for layer in again.layers] == [layer.digest for layer in first.layers]
    assert again.layers[0].cached and again.layers[1].cached


def test_sensor_agg_is_reproducible(sensor: tuple[ImageStore, BuildResult], tmp_path: Path) -> None:
    store, first = sensor
    again = build_image(copy_example("sensor-agg", tmp_path), ["sensor-agg:1"], store=store)
    assert again.digest == first.digest
    assert store.resolve("sensor-agg:1").digest == first.digest


def test_manifest_is_an_oci_artifact_with_three_layers(
    hello: tuple[ImageStore, BuildResult],
) -> None:
    store, result = hello
    image, manifest = store.manifest("hello-c:1")
    assert image.digest == result.digest
    raw = json.loads(store.read_blob(result.digest))
    assert raw["mediaType"] == mediatypes.OCI_MANIFEST
    assert raw["artifactType"] == mediatypes.ARTIFACT_TYPE
    assert raw["config"]["mediaType"] == mediatypes.CONFIG
    assert [layer["mediaType"] for layer in raw["layers"]] == [
        mediatypes.KERNEL_GZIP,
        mediatypes.INITRD_GZIP,
        mediatypes.INITRD_GZIP,
    ]
    assert raw["annotations"] == {"org.opencontainers.image.title": "hello-c"}
    for layer in manifest.layers:
        store.verify_blob(layer.digest)
    assert isinstance(result.manifest, ImageManifest)
    assert [r.role for r in result.layers] == ["kernel", "runtime", "app"]


def test_config_of_a_static_image(hello: tuple[ImageStore, BuildResult]) -> None:
    from ukedge.kernel import ensure_kernel

    store, result = hello
    config = store.config(store.manifest("hello-c:1")[1])
    kernel = ensure_kernel("minimal")
    assert config == result.config
    assert config.name == "hello-c" and config.runtime == "static"
    assert config.entrypoint == ["/app/hello-c"]
    assert config.args == ["world"]
    assert config.env == {"HELLO_GREETING": "Hello"}
    assert config.memory_mib == 32 and config.vcpus == 1
    assert config.boot.protocol == "linux-pvh"
    assert config.boot.cmdline == kernel.cmdline
    assert (config.kernel.profile, config.kernel.version) == ("minimal", kernel.version)
    assert config.created is None, "no SOURCE_DATE_EPOCH, no creation time"


def test_layers_of_a_static_image(hello: tuple[ImageStore, BuildResult], tmp_path: Path) -> None:
    from ukedge.kernel import ensure_kernel

    store, result = hello
    kernel, runtime, app = result.layers
    assert gzip.decompress(store.read_blob(kernel.digest)) == (
        ensure_kernel("minimal").vmlinux.read_bytes()
    )
    platform = layer_entries(store, runtime.digest)
    assert platform["init"][0] == 0o100755
    assert platform["dev/console"][0] == 0o020600
    files = layer_entries(store, app.digest)
    assert sorted(files) == ["app", "app/hello-c"]
    mode, binary = files["app/hello-c"]
    assert mode == 0o100755
    assert binary[:4] == b"\x7fELF"
    assert app.uncompressed_size == len(gzip.decompress(store.read_blob(app.digest)))
    assert result.size == sum(layer.size for layer in result.layers) + result.manifest.config.size
    (tmp_path / "hello-c").write_bytes(binary)
    assert read_elf(tmp_path / "hello-c").is_static


def test_python_image(sensor: tuple[ImageStore, BuildResult]) -> None:
    store, result = sensor
    config = result.config
    assert config.entrypoint == ["python3", "-S", "-u", "/app/main.py"]
    assert config.env["WINDOW_SECONDS"] == "10"
    assert config.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert config.env["PYTHONPATH"] == "/usr/lib/python3.11", "loose stdlib before the zip"
    assert config.memory_mib == 96
    assert [p.port for p in config.ports] == [8080]
    assert config.healthcheck is not None and config.healthcheck.path == "/healthz"
    runtime = layer_entries(store, result.layers[1].digest)
    assert "init" in runtime and "usr/bin/python3.11" in runtime
    assert "usr/lib/python311.zip" in runtime
    app = layer_entries(store, result.layers[2].digest)
    assert "app/main.py" in app
    assert "app/sensoragg/service.py" in app
    assert "app/sensoragg/__pycache__/service.cpython-311.pyc" in app
    pyc = app["app/sensoragg/__pycache__/service.cpython-311.pyc"][1]
    assert int.from_bytes(pyc[4:8], "little") == 0b01, "unchecked-hash bytecode"
    assert not any("/tests/" in name for name in app)


def test_source_date_epoch_sets_created(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = build_image(EXAMPLES / "hello-c", ["hello-c:sde"], store=store)
    assert first.config.created == "2023-11-14T22:13:20Z"
    assert first.manifest.annotations == {
        "org.opencontainers.image.title": "hello-c",
        "org.opencontainers.image.created": "2023-11-14T22:13:20Z",
    }
    assert build_image(EXAMPLES / "hello-c", ["hello-c:sde"], store=store).digest == first.digest


def test_memory_default_and_minimum(store: ImageStore, tmp_path: Path) -> None:
    ctx = _bad_context(tmp_path, "[app]\nname = 'mem'\nruntime = 'python'\n", **{"main.py": ""})
    result = build_image(ctx, ["mem:1"], store=store)
    minimum = result.config.min_memory_mib
    assert minimum is not None
    assert result.config.memory_mib >= max(64, minimum) and result.config.memory_mib % 8 == 0
    # The root (half the RAM left after the kernel and the compressed layers) holds the layers.
    initrd = sum(layer.uncompressed_size for layer in result.layers[1:])
    compressed = sum(layer.size for layer in result.layers[1:])
    assert (minimum << 20) - result.layers[0].uncompressed_size - compressed > 2 * initrd * 0.9
    before = snapshot(store)
    (ctx / "Ukfile").write_text(
        f"[app]\nname = 'mem'\nruntime = 'python'\n[resources]\nmemory = '{minimum - 1}M'\n"
    )
    with pytest.raises(
        UkfileError, match=rf"resources\.memory: {minimum - 1}M is too small to boot .* {minimum}M"
    ):
        build_image(ctx, ["mem:2"], store=store)
    assert snapshot(store) == before
    (ctx / "Ukfile").write_text(
        f"[app]\nname = 'mem'\nruntime = 'python'\n[resources]\nmemory = '{minimum}M'\n"
    )
    assert build_image(ctx, ["mem:3"], store=store).config.memory_mib == minimum


def test_app_pythonpath_goes_first(store: ImageStore, tmp_path: Path) -> None:
    ctx = _bad_context(
        tmp_path,
        "[app]\nname = 'pp'\nruntime = 'python'\n[env]\nPYTHONPATH = '/app/lib'\n",
        **{"main.py": ""},
    )
    result = build_image(ctx, ["pp:1"], store=store)
    assert result.config.env["PYTHONPATH"] == "/app/lib:/usr/lib/python3.11"


def test_tags(store: ImageStore) -> None:
    result = build_image(EXAMPLES / "hello-c", ["hello-c:1", "edge/hello:v2"], store=store)
    assert [i.ref for i in store.images()] == ["edge/hello:v2", "hello-c:1"]
    assert {i.digest for i in store.images()} == {result.digest}
    default = build_image(EXAMPLES / "hello-c", [], store=store)
    assert default.tags == ["hello-c:latest"]


def _bad_context(tmp_path: Path, ukfile: str, **files: str | bytes) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Ukfile").write_text(ukfile)
    for name, content in files.items():
        path = ctx / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return ctx


_STATIC = "[app]\nname = 'bad'\nruntime = 'static'\n[static]\n"


@pytest.mark.parametrize(
    ("ukfile", "files", "error", "message"),
    [
        ("[app]\nname = 'bad'\nruntime = 'cobol'\n", {}, UkfileError, "unknown runtime 'cobol'"),
        ("[app\n", {}, UkfileError, "invalid TOML"),
        (
            "[app]\nname = 'bad'\nruntime = 'python'\n[kernel]\nprofile = 'huge'\n",
            {"main.py": ""},
            UkfileError,
            r"kernel\.profile: unknown profile 'huge'; known profiles: .*minimal",
        ),
        (_STATIC + "sources = ['missing.c']\n", {}, UkfileError, "missing.c does not exist"),
        (
            _STATIC + "sources = ['bad.c']\n",
            {"bad.c": "int main(void) { return nope; }\n"},
            BuildError,
            "compiling bad.c failed",
        ),
        (
            _STATIC + "binary = 'tool.sh'\n",
            {"tool.sh": "#!/bin/sh\n"},
            UkfileError,
            "not an executable for x86_64",
        ),
        (
            "[app]\nname = 'bad'\nruntime = 'python'\n",
            {"app.py": "print(1)\n"},
            UkfileError,
            "no main.py",
        ),
        (
            "[app]\nname = 'bad'\nruntime = 'python'\n[python]\nrequirements_file = 'r.txt'\n",
            {"main.py": ""},
            UkfileError,
            "r.txt does not exist",
        ),
    ],
)
def test_failed_builds_change_nothing(
    hello: tuple[ImageStore, BuildResult],
    tmp_path: Path,
    ukfile: str,
    files: dict[str, str],
    error: type[Exception],
    message: str,
) -> None:
    store, _ = hello
    before = snapshot(store)
    ctx = _bad_context(tmp_path, ukfile, **files)
    with pytest.raises(error, match=message):
        build_image(ctx, ["bad:1"], store=store)
    assert snapshot(store) == before
    assert not [p for p in store.blobs_dir.iterdir() if p.name.startswith(".")]


def test_dynamic_binary_is_refused(hello: tuple[ImageStore, BuildResult], tmp_path: Path) -> None:
    store, _ = hello
    before = snapshot(store)
    ctx = _bad_context(tmp_path, _STATIC + "binary = 'hello'\n", **{"hello.c": "int main(){}\n"})
    subprocess.run(["gcc", "-o", str(ctx / "hello"), str(ctx / "hello.c")], check=True)
    with pytest.raises(UkfileError, match=r"static\.binary: hello is dynamically linked"):
        build_image(ctx, ["bad:1"], store=store)
    assert snapshot(store) == before


def test_prebuilt_static_binary(store: ImageStore, tmp_path: Path) -> None:
    ctx = _bad_context(
        tmp_path,
        "[app]\nname = 'pre'\nruntime = 'static'\n[static]\nbinary = 'bin/tool'\n",
        **{"data.txt": "x"},
    )
    (ctx / "bin").mkdir()
    (ctx / "t.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-static", "-o", str(ctx / "bin/tool"), str(ctx / "t.c")], check=True)
    result = build_image(ctx, ["pre:1"], store=store)
    assert result.config.entrypoint == ["/app/tool"]
    files = layer_entries(store, result.layers[2].digest)
    assert files["app/tool"][0] == 0o100755
    assert "app/data.txt" in files and "app/t.c" in files and "app/bin/tool" not in files


def test_python_requirements_land_on_pythonpath(
    store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "tinypkg", "py3-none-any", {"tinypkg/__init__.py": b"VALUE = 42\n"})
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    ctx = _bad_context(
        tmp_path,
        "[app]\nname = 'req'\nruntime = 'python'\n[python]\nrequirements = ['tinypkg==1.0']\n",
        **{"main.py": "import tinypkg\nprint(tinypkg.VALUE)\n"},
    )
    result = build_image(ctx, ["req:1"], store=store)
    site = "usr/local/lib/python3.11/site-packages"
    assert result.config.env["PYTHONPATH"] == "/usr/lib/python3.11:/" + site
    assert result.config.entrypoint == ["python3", "-u", "/app/main.py"], "the default"
    files = layer_entries(store, result.layers[2].digest)
    assert f"{site}/tinypkg/__init__.py" in files
    assert f"{site}/tinypkg/__pycache__/__init__.cpython-311.pyc" in files
    assert "app/main.py" in files


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (Debian package skopeo)")
def test_skopeo_reads_the_store(sensor: tuple[ImageStore, BuildResult], tmp_path: Path) -> None:
    store, result = sensor
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{store.root}:sensor-agg:1"],
        capture_output=True,
        check=True,
    ).stdout
    assert raw == store.read_blob(result.digest)
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            f"oci:{store.root}:sensor-agg:1",
            f"oci:{tmp_path / 'copy'}:sensor-agg:1",
        ],
        check=True,
        capture_output=True,
    )
    copied = ImageStore(tmp_path / "copy")
    assert copied.resolve("sensor-agg:1").digest == result.digest
