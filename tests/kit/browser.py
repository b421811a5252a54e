"""Headless Chromium for page tests: the flags every run uses, a one-shot ``--dump-dom`` for
static pages, and a W3C WebDriver session (chromedriver, spoken over httpx) for pages a test
must type into and watch change.

A certificate is trusted by its public-key pin (``--ignore-certificate-errors-spki-list``), not
by turning certificate checks off.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kit.net import free_port

__all__ = ["CHROMEDRIVER", "CHROMIUM", "Browser", "browser", "chromium_flags", "dump_dom"]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
T = TypeVar("T")


def chromium_flags(profile: Path, *, cert_pem: str | None = None) -> list[str]:
    """Headless, offline, a fresh profile; trusts ``cert_pem`` (by its key) when given."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    if cert_pem is not None:
        key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
        flags.append(f"--ignore-certificate-errors-spki-list={pin}")
    return flags


def dump_dom(url: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """The page's DOM after load, as Chromium serialises it (stdout); stderr for diagnosis."""
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *chromium_flags(profile), "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Browser:
    """One WebDriver session: navigate, find, type, click, run a script, wait for a state."""

    def __init__(self, client: httpx.Client, session: str) -> None:
        self._client = client
        self._base = f"/session/{session}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self._client.request(method, self._base + path, json=body)
        value = r.json()["value"]
        if r.status_code != 200 or (isinstance(value, dict) and "error" in value):
            raise AssertionError(f"webdriver {method} {path}: {value}")
        return value

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        assert isinstance(found, dict) and _ELEMENT in found, found
        return str(found[_ELEMENT])

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def script(self, source: str, *args: Any) -> Any:
        """Run ``source`` as a function body in the page (``arguments[i]``); its return value."""
        return self._call("POST", "/execute/sync", {"script": source, "args": list(args)})

    def wait_for(self, check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
        """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
            time.sleep(0.2)


@contextlib.contextmanager
def browser(profile: Path, *, cert_pem: str | None = None) -> Iterator[Browser]:
    """Chromium headless under chromedriver on a free port of 127.0.0.1."""
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    port = free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/status").json()["value"]["ready"]:
                        break
                if time.monotonic() > deadline or driver.poll() is not None:
                    raise RuntimeError("chromedriver did not start")
                time.sleep(0.1)
            options = {"binary": CHROMIUM, "args": chromium_flags(profile, cert_pem=cert_pem)}
            r = client.post(
                "/session",
                json={"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}},
            )
            assert r.status_code == 200, r.text
            session = r.json()["value"]["sessionId"]
            try:
                yield Browser(client, session)
            finally:
                client.delete(f"/session/{session}")
    finally:
        driver.terminate()
        driver.wait(30)
