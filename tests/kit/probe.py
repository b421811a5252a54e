"""Python probe images for VM tests: a tiny HTTP app on the guest's port 8080, built on the
python runtime, that answers what a test wants to know from inside the guest (what it mounted,
its random state, MAC address and hostname).

A probe is its ``answer(path) -> bytes`` function (with the imports and state it needs) and the
one HTTP server every probe shares; its Ukfile is the same for every probe but for its name,
its health check path and lines a test adds to its ``[app]`` section.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path
from typing import Any

import httpx

from kit.host import wait_http
from ukedge.build import build_image
from ukedge.image import ImageStore

__all__ = ["build_probe", "probe_json", "sha256_file"]

#: Serves ``answer(self.path)`` for every GET.
_SERVE = """

from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = answer(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""

_UKFILE = """
[app]
{app_lines}name = "{name}"
runtime = "python"

[resources]
memory = "96M"

[[ports]]
port = 8080

[healthcheck]
type = "http"
port = 8080
path = "{health}"
interval = "200ms"
"""


def build_probe(
    store: Path, root: Path, tag: str, answer: str, *, health: str = "/", app_lines: str = ""
) -> str:
    """Build the probe whose ``answer`` is the python source given (in ``root``) into the
    store at ``store`` as ``tag``, its app named after the tag's repository; returns ``tag``."""
    (root / "main.py").write_text(textwrap.dedent(answer).strip() + "\n" + _SERVE)
    ukfile = _UKFILE.format(app_lines=app_lines, name=tag.partition(":")[0], health=health)
    (root / "Ukfile").write_text(ukfile)
    build_image(root, [tag], store=ImageStore(store))
    return tag


def probe_json(port: int, path: str = "/", *, ready: str = "/", ceiling: float = 180) -> Any:
    """The JSON the probe published on ``port`` answers at ``path``, once ``ready`` answers
    (within ``ceiling`` seconds: a boot under TCG on a loaded machine)."""
    wait_http(f"http://127.0.0.1:{port}{ready}", timeout=ceiling)
    answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)
    answer.raise_for_status()
    return answer.json()


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
