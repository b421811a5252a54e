"""A host agent over REST, as a :class:`~ukedge.host.NodeService` (``ukedge --host URL``).

Addresses follow the Docker-context idiom: ``unix:///path/agent.sock`` (or a bare absolute
path), ``tcp://HOST:PORT``, ``http(s)://HOST:PORT`` or ``HOST:PORT``. Errors the agent reports
are raised as the same ukedge error class with the same message, so a command prints and exits
exactly as it would on the node itself.
"""

from __future__ import annotations

import builtins
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent, SSEError, connect_sse

from ukedge import errors, paths
from ukedge.errors import AgentError, NoSuchInstanceError, UkedgeError
from ukedge.host._models import (
    ImageSummary,
    Instance,
    InstanceEvent,
    InstanceStats,
    NodeInfo,
    PruneReport,
    RunRequest,
)
from ukedge.host._names import NAME_PATTERN
from ukedge.host._service import OutputStream
from ukedge.host.migration import MigrateRequest, MigrationOffer, MigrationStatus
from ukedge.registry import BlobOutcome, TransferProgress

__all__ = ["HOST_ENV", "TOKEN_ENV", "AgentClient"]

HOST_ENV = "UKEDGE_HOST"
TOKEN_ENV = "UKEDGE_HOST_TOKEN"
_PREFIX = "/v1"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _parse_address(address: str) -> tuple[str, str | None]:
    """``(base_url, unix_socket_path)`` of an agent address."""
    if address.startswith("unix://"):
        return "http://agent", address.removeprefix("unix://")
    if address.startswith("/"):
        return "http://agent", address
    if address.startswith("tcp://"):
        return "http://" + address.removeprefix("tcp://").rstrip("/"), None
    if address.startswith(("http://", "https://")):
        return address.rstrip("/"), None
    if ":" in address:
        return f"http://{address.rstrip('/')}", None
    raise AgentError(
        f"invalid agent address {address!r}: use unix:///PATH, tcp://HOST:PORT or "
        "http(s)://HOST:PORT"
    )


def _local_token(base_url: str) -> str | None:
    """On the agent's own machine, its token file (readable only by the agent's user)."""
    host = httpx.URL(base_url).host
    if host not in _LOOPBACK:
        return None
    try:
        return (paths.home() / "agent" / "token").read_text().strip() or None
    except OSError:
        return None


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    try:
        body = json.loads(response.read())
        kind, message = str(body["error"]["kind"]), str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        raise AgentError(
            f"{what}: the agent answered {response.status_code} {response.reason_phrase}",
            status=response.status_code,
        ) from None
    _raise_kind(kind, message, response.status_code)


def _raise_kind(kind: str, message: str, status: int | None = None) -> None:
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, UkedgeError) and cls is not AgentError:
        try:
            exc = cls(message)
        except TypeError:  # a class whose constructor wants more than a message
            exc = AgentError(message, status=status)
        raise exc
    raise AgentError(message, status=status)


class AgentClient:
    """Talks to one agent; thread-safe like the httpx client it holds."""

    def __init__(self, address: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.address = address
        base_url, socket_path = _parse_address(address)
        self._socket_path = socket_path
        token = token or os.environ.get(TOKEN_ENV) or None
        if token is None and socket_path is None:
            token = _local_token(base_url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.HTTPTransport(uds=socket_path) if socket_path else None
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers,
            transport=transport,
            # Reads may legitimately wait long (boot, stop, wait, follow); connecting may not.
            timeout=httpx.Timeout(timeout, read=None),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _check_socket(self) -> None:
        # Said here rather than as a refused connection: clearer, and httpcore leaks the
        # socket of a failed Unix connect.
        if self._socket_path and not Path(self._socket_path).exists():
            raise AgentError(
                f"cannot reach the host agent at {self.address}: no socket at "
                f"{self._socket_path} (is `ukedge host serve` running there?)"
            )

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        self._check_socket()
        try:
            response = self._http.request(method, _PREFIX + path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        _raise_for(response, what)
        return response.json()

    def _unreachable(self, exc: httpx.HTTPError) -> AgentError:
        return AgentError(
            f"cannot reach the host agent at {self.address}: {exc or type(exc).__name__} "
            "(is `ukedge host serve` running there?)"
        )

    @staticmethod
    def _key(key: str) -> str:
        # Instance names and ids never hold "/" or other odd characters; the server's router
        # would decode an escaped "/" and answer a bare 404 instead of "no such instance".
        if not NAME_PATTERN.match(key):
            raise NoSuchInstanceError(f"no such instance: {key} (see `ukedge ps -a`)")
        return quote(key, safe="")

    # -- node --------------------------------------------------------------------------------------

    def info(self) -> NodeInfo:
        return NodeInfo.model_validate(self._request("GET", "/node", "node info"))

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").is_success
        except httpx.HTTPError:
            return False

    # -- instances ---------------------------------------------------------------------------------

    def run(self, request: RunRequest) -> Instance:
        body = request.model_dump(mode="json", exclude_defaults=True)
        return Instance.model_validate(self._request("POST", "/instances", "run", json=body))

    def start(self, key: str) -> Instance:
        data = self._request("POST", f"/instances/{self._key(key)}/start", f"start {key}")
        return Instance.model_validate(data)

    def list(self, *, all_instances: bool = False) -> builtins.list[Instance]:
        data = self._request("GET", "/instances", "list", params={"all": all_instances})
        return [Instance.model_validate(item) for item in data]

    def get(self, key: str) -> Instance:
        return Instance.model_validate(self._request("GET", f"/instances/{self._key(key)}", key))

    def wait(self, key: str, timeout: float | None = None) -> Instance:
        params = {"timeout": timeout} if timeout is not None else {}
        data = self._request("POST", f"/instances/{self._key(key)}/wait", key, params=params)
        return Instance.model_validate(data)

    def stop(self, key: str, timeout: float = 10.0) -> Instance:
        data = self._request(
            "POST", f"/instances/{self._key(key)}/stop", f"stop {key}", params={"timeout": timeout}
        )
        return Instance.model_validate(data)

    def kill(self, key: str) -> Instance:
        data = self._request("POST", f"/instances/{self._key(key)}/kill", f"kill {key}")
        return Instance.model_validate(data)

    def remove(self, key: str, *, force: bool = False) -> Instance:
        data = self._request(
            "DELETE", f"/instances/{self._key(key)}", f"rm {key}", params={"force": force}
        )
        return Instance.model_validate(data)

    def stats(self, key: str) -> InstanceStats:
        data = self._request("GET", f"/instances/{self._key(key)}/stats", f"stats {key}")
        return InstanceStats.model_validate(data)

    def follow(
        self,
        key: str,
        stream: OutputStream = "console",
        *,
        follow: bool = True,
        offset: int = 0,
    ) -> Iterator[bytes]:
        params = {"stream": stream, "follow": follow, "offset": offset}
        self._check_socket()
        try:
            with self._http.stream(
                "GET", f"{_PREFIX}/instances/{self._key(key)}/logs", params=params
            ) as response:
                _raise_for(response, f"logs {key}")
                yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def prewarm(self, request: RunRequest) -> str:
        body = request.model_dump(mode="json", exclude_defaults=True)
        return str(self._request("POST", "/images/prewarm", "prewarm", json=body)["snapshot"])

    def events(self, *, stop: threading.Event | None = None) -> Iterator[InstanceEvent]:
        """Subscribed when this returns: every change after the call is in the iterator."""
        stream = self._sse("GET", "/events", "events")
        for event in stream:
            if event.event == "ready":
                break
        return self._instance_events(stream, stop)

    @staticmethod
    def _instance_events(
        stream: Iterator[ServerSentEvent], stop: threading.Event | None
    ) -> Iterator[InstanceEvent]:
        for event in stream:
            if stop is not None and stop.is_set():
                return
            if event.event == "instance":
                yield InstanceEvent.model_validate_json(event.data)

    def _sse(self, method: str, path: str, what: str, **kwargs: Any) -> Iterator[ServerSentEvent]:
        self._check_socket()
        try:
            with connect_sse(self._http, method, _PREFIX + path, **kwargs) as source:
                _raise_for(source.response, what)
                yield from source.iter_sse()
        except SSEError as exc:
            raise AgentError(
                f"{what}: the agent did not answer with an event stream: {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    # -- images ------------------------------------------------------------------------------------

    def images(self) -> builtins.list[ImageSummary]:
        return [ImageSummary.model_validate(i) for i in self._request("GET", "/images", "images")]

    def inspect_image(self, ref: str, platform: str | None = None) -> dict[str, Any]:
        params = {"ref": ref} | ({"platform": platform} if platform else {})
        data = self._request("GET", "/images/inspect", f"inspect {ref}", params=params)
        return dict(data)

    def pull(self, ref: str, *, progress: TransferProgress | None = None) -> ImageSummary:
        for event in self._sse("POST", "/images/pull", f"pull {ref}", json={"ref": ref}):
            data = json.loads(event.data) if event.data else {}
            if event.event == "done":
                return ImageSummary.model_validate(data)
            if event.event == "error":
                _raise_kind(str(data.get("kind")), str(data.get("message")))
            if progress is None:
                continue
            if event.event == "start":
                progress.start(data["digest"], data["label"], int(data["total"]))
            elif event.event == "progress":
                progress.update(data["digest"], int(data["completed"]))
            elif event.event == "finish":
                progress.finish(data["digest"], BlobOutcome(data["outcome"]))
        raise AgentError(f"pull {ref}: the agent ended the stream without a result")

    def remove_image(self, ref: str, *, force: bool = False) -> builtins.list[str]:
        data = self._request("DELETE", "/images", f"rmi {ref}", params={"ref": ref, "force": force})
        return [str(item) for item in data]

    def prune_images(self) -> PruneReport:
        return PruneReport.model_validate(self._request("POST", "/images/prune", "image prune"))

    # -- migrations --------------------------------------------------------------------------------

    def migration_offer(self) -> MigrationOffer:
        """Ask this agent (the target) to admit one move; the offer names the host it listens
        on as the agent sees it, which :func:`~ukedge.host.move_instance` replaces with the
        host this client reached the agent by."""
        return MigrationOffer.model_validate(
            self._request("POST", "/migrations/offer", "migration offer")
        )

    def migrate(self, key: str, request: MigrateRequest) -> MigrationStatus:
        """Start moving ``key`` from this agent (the source); returns at once."""
        body = request.model_dump(mode="json")
        return MigrationStatus.model_validate(
            self._request("POST", f"/instances/{self._key(key)}/migrate", "migrate", json=body)
        )

    def migration(self, migration: str, *, wait: float = 0.0) -> MigrationStatus:
        """A move's status; with ``wait``, once it ended or ``wait`` seconds passed."""
        return MigrationStatus.model_validate(
            self._request(
                "GET",
                f"/migrations/{quote(migration, safe='')}",
                "migration",
                params={"wait": wait} if wait else None,
            )
        )

    def cancel_migration(self, migration: str) -> MigrationStatus:
        return MigrationStatus.model_validate(
            self._request("DELETE", f"/migrations/{quote(migration, safe='')}", "cancel")
        )

    @property
    def tcp_host(self) -> str | None:
        """The host this client reaches the agent by over TCP (None over a Unix socket)."""
        if self._socket_path is not None:
            return None
        return httpx.URL(str(self._http.base_url)).host or None
