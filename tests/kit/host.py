"""Helpers for the host tests (imported by module name: pytest puts this directory on sys.path)."""

from __future__ import annotations

import sys
import time

import httpx


def ukedge_cmd() -> list[str]:
    return [sys.executable, "-m", "ukedge.cli.main"]


def wait_http(url: str, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=2.0)
        except httpx.TransportError as exc:
            last = exc
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s: {last}")
