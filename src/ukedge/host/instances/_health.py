"""Readiness of an app inside a guest, seen from the host through a forwarded port.

QEMU's user-mode network accepts a connection on the host side before it knows whether the
guest listens, and closes it when the guest refuses. So a TCP check is ready only when the
connection stays open for a moment; an HTTP check needs a status below 400.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from ukedge.errors import InstanceError
from ukedge.host._models import HealthStatus
from ukedge.image import HealthCheck

__all__ = ["check_once", "next_health", "wait_healthy"]

_POLL_S = 0.02


def check_once(check: HealthCheck, host: str, port: int, *, max_timeout: float = 2.0) -> bool:
    """One probe; ``True`` when the app answers as the health check asks."""
    timeout = min(check.timeout_s, max_timeout)
    if check.type == "http":
        import httpx  # loads with the first HTTP check, not with every command that lists instances

        try:
            return httpx.get(f"http://{host}:{port}{check.path}", timeout=timeout).status_code < 400
        except httpx.HTTPError:
            return False
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(0.05)
            try:
                return conn.recv(1, socket.MSG_PEEK) != b""
            except TimeoutError:
                return True  # open and quiet: the guest accepted
    except OSError:
        return False


def wait_healthy(
    check: HealthCheck,
    host: str,
    port: int,
    *,
    timeout: float,
    alive: Callable[[], bool],
) -> float:
    """Poll until healthy; returns the seconds it took. Raises InstanceError on timeout or when
    ``alive()`` says the machine has ended."""
    began = time.monotonic()
    while True:
        if check_once(check, host, port):
            return time.monotonic() - began
        if not alive():
            raise InstanceError("the app's machine ended before its health check passed")
        if time.monotonic() - began > timeout:
            raise InstanceError(
                f"the app did not pass its {check.type} health check on guest port {check.port} "
                f"within {timeout:.0f}s"
            )
        time.sleep(_POLL_S)


def next_health(
    status: HealthStatus, failures: int, *, passed: bool, retries: int, in_start_period: bool
) -> tuple[HealthStatus, int]:
    """The health after one probe, and the failures in a row so far (Docker's rules).

    A pass makes the app healthy at once. Failures count only once the start period is over
    or the app has passed before; ``retries`` of them in a row make it unhealthy.
    """
    if status is HealthStatus.UNCHECKED:
        status = HealthStatus.STARTING
    if passed:
        return HealthStatus.HEALTHY, 0
    if in_start_period and status is HealthStatus.STARTING:
        return status, 0
    failures += 1
    if failures >= retries:
        return HealthStatus.UNHEALTHY, failures
    return status, failures
