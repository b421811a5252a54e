"""Guest memory as a new user meets it: a Python app without ``[resources]`` boots, and a guest
too small for its image says so (from `run` before booting, from the guest init after)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.host import ukedge_cmd, wait_http
from kit.net import free_port
from ukedge.image import ImageConfig, ImageManifest, ImageStore, mediatypes

pytestmark = [pytest.mark.vm, pytest.mark.kernel]

_APP = """\
import http.server, os

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello\\n")

http.server.HTTPServer(("", int(os.environ.get("PORT", "8080"))), Hello).serve_forever()
"""

_UKFILE = """\
[app]
name = "hello-py"
runtime = "python"
entrypoint = ["python3", "-u", "/app/main.py"]

[files]
include = ["main.py"]

[[ports]]
port = 8080
"""


def ukedge(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ukedge_cmd(), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def hello_py(ukedge_home: Path, tmp_path: Path) -> Iterator[ImageConfig]:
    """The ten-line stdlib HTTP app of the issue, built with no [resources] section."""
    ctx = tmp_path / "hello-py"
    ctx.mkdir()
    (ctx / "main.py").write_text(_APP)
    (ctx / "Ukfile").write_text(_UKFILE)
    built = ukedge("build", str(ctx))
    assert built.returncode == 0, built.stderr
    inspected = json.loads(ukedge("inspect", "hello-py:latest").stdout)
    yield ImageConfig.model_validate(inspected["config"])
    ids = ukedge("ps", "-aq").stdout.split()
    if ids:
        ukedge("rm", "-f", *ids)


def test_python_app_without_resources_boots_first_time(hello_py: ImageConfig) -> None:
    assert hello_py.min_memory_mib is not None
    assert hello_py.memory_mib >= hello_py.min_memory_mib
    port = free_port()
    started = ukedge("run", "-d", "-p", f"{port}:8080", "hello-py")
    assert started.returncode == 0, started.stderr
    assert wait_http(f"http://127.0.0.1:{port}/", timeout=120).text == "hello\n"


def test_memory_below_the_images_minimum_is_refused_with_the_fix(hello_py: ImageConfig) -> None:
    minimum = hello_py.min_memory_mib
    assert minimum is not None
    refused = ukedge("run", "-d", "-m", f"{minimum - 1}M", "hello-py")
    assert refused.returncode != 0
    assert (
        f"guest memory {minimum - 1}M is too small for this image (needs ~{minimum}M unpacked); "
        "set [resources] memory or -m"
    ) in refused.stderr
    assert ukedge("ps", "-aq").stdout.strip() == "", "nothing was left behind"


def test_guest_short_of_memory_says_so_and_run_d_reports_it(
    hello_py: ImageConfig, ukedge_home: Path
) -> None:
    # An image built before the minimum was recorded, with the old 64M default: the host cannot
    # refuse it, so the guest init must tell, and `run -d` must not exit 0.
    store = ImageStore(ukedge_home / "store")
    _, manifest = store.manifest("hello-py:latest")
    old = hello_py.model_dump(mode="json", exclude_none=True)
    old.pop("min_memory_mib")
    config = ImageConfig.model_validate(old | {"memory_mib": 64}).to_json()
    desc = store.put_bytes(config, mediatypes.CONFIG)
    old_manifest = manifest.model_dump(mode="json", exclude_none=True) | {
        "config": desc.model_dump(mode="json", exclude_none=True)
    }
    store.add_manifest(ImageManifest.model_validate(old_manifest).to_json(), "old:1")

    started = ukedge("run", "-d", "--name", "short", "old:1")
    assert started.returncode == 125, started.stdout + started.stderr
    assert (
        "guest memory 64M is too small for this image (the kernel could not unpack its layers); "
        "set [resources] memory or -m"
    ) in started.stderr
    assert "Initramfs unpacking failed" in started.stderr  # the last console lines
    assert "ukedge-init: guest memory is too small for this image" in started.stderr
    listed = json.loads(ukedge("ps", "-a", "--json").stdout)
    assert [(i["name"], i["state"], i["exit_code"]) for i in listed] == [("short", "failed", 125)]
