"""The controller's REST API as Python calls: what every fleet command of the CLI goes through.

Where the controller is and how to trust it come from :class:`ControllerConfig`: a flag, else
``UKEDGE_CONTROLLER`` / ``UKEDGE_CONTROLLER_TOKEN`` / ``UKEDGE_CONTROLLER_CERT``, else the files a
local ``ukedge controller serve`` keeps in its data directory (``admin.token``, ``tls.crt``), so
on the controller's own machine nothing needs setting up. TLS trusts exactly the controller's
certificate (no CA, no host-name check), as the nodes do with the pin of their join token.

A refusal is raised as :class:`ControllerError` with the server's ``detail`` as its message; a
controller that cannot be reached, or whose certificate is not the one trusted, gets a message
saying what to do. The result stream (server-sent events) reconnects by itself and resumes after
the last record it delivered (``Last-Event-ID``), so a controller restart loses no record and
repeats none.

Long on purpose: one short method per route of the controller's API, all over one request
path (trust, token, error mapping); splitting them would scatter that path.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import BaseModel, TypeAdapter, ValidationError

from ukedge import paths
from ukedge.controller._models import (
    Deployment,
    DeploymentSpec,
    MoveRecord,
    MoveRequest,
    NodeRecord,
    ReplicaRecord,
    ResultRecordOut,
    Revision,
    TokenCreated,
    TokenInfo,
)
from ukedge.errors import ControllerError, UsageError
from ukedge.host.link import pinned_context
from ukedge.validation import validation_message

__all__ = [
    "CERT_ENV",
    "CLIENT_ENV",
    "DEFAULT_URL",
    "TOKEN_ENV",
    "URL_ENV",
    "ControllerClient",
    "ControllerConfig",
]

URL_ENV = "UKEDGE_CONTROLLER"
TOKEN_ENV = "UKEDGE_CONTROLLER_TOKEN"
CERT_ENV = "UKEDGE_CONTROLLER_CERT"
#: The variables the client reads (not settings of the server, whose prefix they share).
CLIENT_ENV = frozenset({URL_ENV, TOKEN_ENV, CERT_ENV})
DEFAULT_URL = "https://127.0.0.1:7700"

_log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)
#: Seconds of silence after which the result stream counts as cut: the controller sends a
#: comment every 15 s when it has nothing to say, and a link that died without a FIN (an edge
#: uplink, a NAT timeout) says nothing at all.
_STREAM_SILENCE_S = 60.0
#: Rollout states after which nothing more happens without a new request.
_SETTLED = frozenset({"complete", "rolled-back", "failed"})


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _local_file(url: httpx.URL, name: str) -> Path | None:
    """A file of the controller on this machine, when ``url`` is this machine: its admin token
    is never sent to a controller elsewhere."""
    return paths.home() / "controller" / name if url.host in _LOOPBACK else None


@dataclass(frozen=True)
class ControllerConfig:
    """Where the controller is, the admin token, and the certificate to trust (PEM)."""

    url: str
    token: str
    cert_pem: str | None
    #: The file the certificate was read from, for messages.
    cert_source: str = ""

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        *,
        token: str | None = None,
        cert: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ControllerConfig:
        """Each setting from its argument, else its environment variable, else the local
        controller's files; raises :class:`UsageError` saying how to supply a missing one."""
        env = os.environ if environ is None else environ
        url = (url or env.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        parsed = httpx.URL(url) if "://" in url else None
        if parsed is None or parsed.scheme not in ("https", "http") or not parsed.host:
            raise UsageError(f"controller URL {url!r}: expected https://HOST[:PORT]")
        token = token or env.get(TOKEN_ENV) or None
        token_file = _local_file(parsed, "admin.token")
        if token is None and token_file is not None:
            try:
                token = token_file.read_text().strip() or None
            except OSError:
                token = None
        if token is None:
            where = (
                f"{token_file} does not exist here; on this machine, start a controller with "
                "`ukedge controller serve`"
                if token_file is not None
                else "in the controller's data directory"
            )
            raise UsageError(
                f"no admin token for the controller at {url}: set {TOKEN_ENV} to the contents "
                f"of its admin.token ({where})"
            )
        if parsed.scheme == "http":
            return cls(url, token, None)  # a TLS-terminating proxy in front; nothing to pin
        cert_path = cert or (Path(env[CERT_ENV]) if env.get(CERT_ENV) else None)
        if cert_path is None:
            cert_path = _local_file(parsed, "tls.crt")
            if cert_path is None or not cert_path.is_file():
                where = f"; {cert_path} does not exist here" if cert_path is not None else ""
                raise UsageError(
                    f"no certificate to trust for the controller at {url}: set {CERT_ENV} to a "
                    f"copy of its tls.crt (in the controller's data directory{where})"
                )
        try:
            pem = cert_path.read_text()
        except OSError as exc:
            raise UsageError(
                f"cannot read the controller certificate {cert_path}: {exc.strerror or exc}"
            ) from exc
        return cls(url, token, pem, str(cert_path))


class ControllerClient:
    """One controller over HTTPS, as a :class:`~ukedge.controller.FleetService`; thread-safe
    like the httpx client it holds."""

    def __init__(self, config: ControllerConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        verify: ssl.SSLContext | bool = True
        if config.cert_pem is not None:
            try:
                verify = pinned_context(config.cert_pem)
            except (ssl.SSLError, ValueError) as exc:
                raise UsageError(
                    f"{config.cert_source or 'the controller certificate'} is not a PEM "
                    f"certificate: {exc}"
                ) from exc
        self._http = httpx.Client(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.token}"},
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    @property
    def url(self) -> str:
        return self.config.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.HTTPError) -> ControllerError:
        url = self.config.url
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ssl.SSLError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ssl.SSLCertVerificationError):
            return ControllerError(
                f"the server at {url} is not the controller whose certificate is "
                f"{self.config.cert_source or 'trusted'} (its certificate does not match): point "
                f"{CERT_ENV} at that controller's tls.crt, or --controller at the right address"
            )
        if cause is not None:
            return ControllerError(
                f"TLS with the server at {url} failed ({cause.reason or cause}): is it the "
                f"controller? It speaks HTTPS only; check --controller / {URL_ENV}"
            )
        if isinstance(exc, httpx.ConnectError):
            return ControllerError(
                f"cannot reach the controller at {url}: {exc or 'connection failed'} (start one "
                f"with `ukedge controller serve`, or point --controller / {URL_ENV} at yours)"
            )
        reason = str(exc) or type(exc).__name__
        return ControllerError(f"the controller at {url} did not answer: {reason}")

    def _raise_for(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        response.read()  # a streamed response (the result stream) has not read its body yet
        try:
            detail = response.json()["detail"]
        except (ValueError, KeyError, TypeError):
            detail = None
        if isinstance(detail, list):  # a request the server's validation refused
            detail = validation_message(detail, whole="request")
        if response.status_code == 401:
            message = (
                f"the controller at {self.config.url} refused the admin token "
                f"({detail or 'not authorised'}); set {TOKEN_ENV} to the contents of its "
                "admin.token"
            )
        elif detail:
            message = str(detail)  # the controller's words name the node, deployment or field
        else:
            status = f"{response.status_code} {response.reason_phrase}"
            message = f"{what}: the controller answered {status}"
        raise ControllerError(message, status=response.status_code)

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for(response, what)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ControllerError(f"{what}: the controller answered with no JSON") from exc

    def _model(self, model: type[_M], data: Any, what: str) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ControllerError(
                f"{what}: the controller answered out of protocol ({validation_message(exc)}); "
                "is it the same ukedge version?"
            ) from exc

    def _models(self, model: type[_M], data: Any, what: str) -> list[_M]:
        try:
            return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]
        except ValidationError as exc:
            raise ControllerError(
                f"{what}: the controller answered out of protocol ({validation_message(exc)}); "
                "is it the same ukedge version?"
            ) from exc

    @staticmethod
    def _key(key: str) -> str:
        # Escaped so that a name holding "/" is one unknown name, not another route.
        return quote(key, safe="")

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").is_success
        except httpx.HTTPError:
            return False

    # -- join tokens -----------------------------------------------------------------------------

    def create_token(
        self, description: str = "", *, ttl_s: float | None = None, uses: int | None = None
    ) -> TokenCreated:
        body: dict[str, Any] = {"description": description}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        if uses is not None:
            body["uses"] = uses
        data = self._request("POST", "/v1/tokens", "token create", json=body)
        return self._model(TokenCreated, data, "token create")

    def tokens(self) -> builtins.list[TokenInfo]:
        return self._models(TokenInfo, self._request("GET", "/v1/tokens", "tokens"), "tokens")

    def delete_token(self, token_id: str) -> None:
        self._request("DELETE", f"/v1/tokens/{self._key(token_id)}", f"token rm {token_id}")

    # -- nodes -----------------------------------------------------------------------------------

    def nodes(self) -> builtins.list[NodeRecord]:
        return self._models(NodeRecord, self._request("GET", "/v1/nodes", "nodes"), "nodes")

    def node(self, key: str) -> NodeRecord:
        """A node by id or name."""
        data = self._request("GET", f"/v1/nodes/{self._key(key)}", f"node {key}")
        return self._model(NodeRecord, data, f"node {key}")

    def label_node(
        self,
        key: str,
        set_labels: Mapping[str, str] | None = None,
        remove: builtins.list[str] | None = None,
    ) -> NodeRecord:
        node_id = self.node(key).id
        body = {"set": dict(set_labels or {}), "remove": list(remove or [])}
        what = f"node label {key}"
        data = self._request("PUT", f"/v1/nodes/{self._key(node_id)}/labels", what, json=body)
        return self._model(NodeRecord, data, what)

    def _node_action(self, key: str, action: str, **params: str) -> NodeRecord:
        node_id = self.node(key).id
        what = f"node {action} {key}"
        path = f"/v1/nodes/{self._key(node_id)}/{action}"
        data = self._request("POST", path, what, params=params)
        return self._model(NodeRecord, data, what)

    def cordon(self, key: str) -> NodeRecord:
        return self._node_action(key, "cordon")

    def uncordon(self, key: str) -> NodeRecord:
        return self._node_action(key, "uncordon")

    def drain(self, key: str, *, migrate: str | None = None, postcopy: bool = False) -> NodeRecord:
        """Drain the node; with ``migrate`` (snapshot or live) its replicas move with their
        memory instead of being replaced; ``postcopy`` (live) switches each to post-copy."""
        params = {"migrate": migrate} if migrate else {}
        if postcopy:
            params["postcopy"] = "true"
        return self._node_action(key, "drain", **params)

    # -- moves -----------------------------------------------------------------------------------

    def move(
        self, instance: str, to: str, *, mode: str = "snapshot", postcopy: bool = False
    ) -> MoveRecord:
        """Start moving a replica's instance to node ``to``; follow it with :meth:`get_move`."""
        fields: dict[str, object] = {"instance": instance, "to": to, "mode": mode}
        if postcopy:  # (left out otherwise: a controller of an earlier release refuses it)
            fields["postcopy"] = True
        body = MoveRequest.model_validate(fields)
        what = f"migrate {instance}"
        data = self._request(
            "POST", "/v1/moves", what, json=body.model_dump(mode="json", exclude_defaults=True)
        )
        return self._model(MoveRecord, data, what)

    def get_move(self, move_id: str) -> MoveRecord:
        what = f"move {move_id}"
        return self._model(
            MoveRecord, self._request("GET", f"/v1/moves/{self._key(move_id)}", what), what
        )

    def cancel_move(self, move_id: str) -> MoveRecord:
        """Cancel a move (it ends ``failed`` once its node has given the instance back)."""
        what = f"moves cancel {move_id}"
        return self._model(
            MoveRecord, self._request("DELETE", f"/v1/moves/{self._key(move_id)}", what), what
        )

    def moves(self, *, active: bool = False) -> builtins.list[MoveRecord]:
        params = {"active": "true"} if active else {}
        return self._models(
            MoveRecord, self._request("GET", "/v1/moves", "moves", params=params), "moves"
        )

    def remove_node(self, key: str) -> NodeRecord:
        node = self.node(key)
        self._request("DELETE", f"/v1/nodes/{self._key(node.id)}", f"node rm {key}")
        return node

    # -- deployments -----------------------------------------------------------------------------

    def deploy(self, spec: DeploymentSpec) -> Deployment:
        body = spec.model_dump(mode="json")
        data = self._request("POST", "/v1/deployments", f"deploy {spec.name}", json=body)
        return self._model(Deployment, data, f"deploy {spec.name}")

    def deployments(self) -> builtins.list[Deployment]:
        data = self._request("GET", "/v1/deployments", "deployments")
        return self._models(Deployment, data, "deployments")

    def deployment(self, name: str) -> Deployment:
        data = self._request("GET", f"/v1/deployments/{self._key(name)}", f"deployment {name}")
        return self._model(Deployment, data, f"deployment {name}")

    def delete_deployment(self, name: str) -> None:
        self._request("DELETE", f"/v1/deployments/{self._key(name)}", f"deployments rm {name}")

    def scale(self, name: str, replicas: int) -> Deployment:
        what = f"scale {name}"
        path = f"/v1/deployments/{self._key(name)}/scale"
        data = self._request("POST", path, what, json={"replicas": replicas})
        return self._model(Deployment, data, what)

    def revisions(self, name: str) -> builtins.list[Revision]:
        what = f"rollout history {name}"
        data = self._request("GET", f"/v1/deployments/{self._key(name)}/revisions", what)
        return self._models(Revision, data, what)

    def rollback(self, name: str, revision: int | None = None) -> Deployment:
        what = f"rollout undo {name}"
        body = {"revision": revision} if revision is not None else {}
        path = f"/v1/deployments/{self._key(name)}/rollback"
        return self._model(Deployment, self._request("POST", path, what, json=body), what)

    def watch_rollout(
        self, name: str, revision: int, *, interval: float = 1.0
    ) -> Iterator[Deployment]:
        """The deployment each time its rollout changes, until the rollout of ``revision`` (or
        the revision it rolled back to) has settled; the last one yielded is the outcome."""
        last: tuple[Any, ...] | None = None
        while True:
            current = self.deployment(name)
            rollout = current.rollout
            seen = (current.revision, *rollout.model_dump().values())
            if seen != last:
                last = seen
                yield current
            ours = rollout.revision >= revision or rollout.state == "rolled-back"
            if ours and rollout.state in _SETTLED:
                return
            time.sleep(interval)

    # -- replicas and results --------------------------------------------------------------------

    def replicas(
        self, *, deployment: str | None = None, node: str | None = None
    ) -> builtins.list[ReplicaRecord]:
        params = {k: v for k, v in (("deployment", deployment), ("node", node)) if v}
        data = self._request("GET", "/v1/replicas", "replicas", params=params)
        return self._models(ReplicaRecord, data, "replicas")

    def results(
        self,
        *,
        deployment: str | None = None,
        node: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_id: int | None = None,
        limit: int = 1000,
    ) -> Iterator[ResultRecordOut]:
        """Stored results in id order, fetched a page of ``limit`` at a time."""
        filters = _filters(deployment=deployment, node=node, since=since, until=until)
        while True:
            params = {**filters, "limit": limit}
            if after_id is not None:
                params["after_id"] = after_id
            page = self._models(
                ResultRecordOut,
                self._request("GET", "/v1/results", "results", params=params),
                "results",
            )
            yield from page
            if len(page) < limit:
                return
            after_id = page[-1].id

    def stream_results(
        self,
        *,
        deployment: str | None = None,
        node: str | None = None,
        since: float | None = None,
        after_id: int | None = None,
        stop: threading.Event | None = None,
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
    ) -> Iterator[ResultRecordOut]:
        """Results as the controller stores them, live, after ``after_id`` when given.

        A dropped stream (a controller restart, a network cut, the server closing it, a
        server error, or silence longer than the controller's keep-alives allow) is reopened
        after a pause (the server's ``retry:`` if it sent one, else ``retry_s``, doubling to
        ``max_retry_s`` while it stays down) with ``Last-Event-ID`` naming the last record
        delivered. A refusal (bad token, unknown deployment) ends it with an error; so does a
        controller that cannot be reached at the first attempt. ``stop`` ends it at the next
        event or retry.
        """
        params = _filters(deployment=deployment, node=node, since=since)
        last_id = after_id
        server_retry: float | None = None
        pause = retry_s
        connected_once = False
        while stop is None or not stop.is_set():
            headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    "/v1/results/stream",
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=_STREAM_SILENCE_S),
                ) as source:
                    if connected_once and source.response.status_code >= 500:
                        # A controller (or its proxy) still starting: as if it were down.
                        raise httpx.RemoteProtocolError(
                            f"{source.response.status_code} {source.response.reason_phrase}"
                        )
                    self._raise_for(source.response, "results stream")
                    connected_once = True
                    pause = server_retry or retry_s
                    for event in source.iter_sse():
                        if event.retry is not None:
                            server_retry = pause = event.retry / 1000
                        if event.event not in ("result", "message") or not event.data:
                            continue
                        record = self._model(ResultRecordOut, _json(event.data), "results stream")
                        yield record
                        last_id = record.id
                        if stop is not None and stop.is_set():
                            return
                _log.info("results stream ended; reopening after record %s", last_id)
            except SSEError as exc:
                raise ControllerError(
                    f"results stream: the controller did not answer with an event stream: {exc}"
                ) from exc
            except httpx.HTTPError as exc:
                if not connected_once:
                    raise self._unreachable(exc) from exc
                _log.warning(
                    "results stream from %s dropped (%s); reconnecting in %.1fs",
                    self.config.url,
                    exc or type(exc).__name__,
                    pause,
                )
            if stop is not None:
                if stop.wait(pause):
                    return
            else:
                time.sleep(pause)
            pause = min(max_retry_s, pause * 2)


def _filters(**values: str | float | None) -> dict[str, str | float]:
    return {key: value for key, value in values.items() if value is not None}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ControllerError(f"results stream: an event that is not JSON: {text[:60]!r}") from exc
