"""The node's HTTP client of the controller: enrolment, heartbeats and result batches.

Every connection trusts exactly the controller's certificate the join token pinned (no CA, no
host-name check), and every call but enrolment carries the node's credential as bearer token.
httpx's errors become ours at this boundary: :class:`LinkUnavailable` when the controller
cannot be reached or answers 5xx (the caller retries later, the node keeps running what it has),
:class:`LinkError` when it refuses (4xx: the message carries the controller's ``detail``).
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from ukedge.errors import LinkError, LinkUnavailable
from ukedge.host.link._token import pinned_context
from ukedge.host.link._wire import (
    ENROL_PATH,
    HEARTBEAT_PATH,
    RESULTS_PATH,
    EnrolReply,
    EnrolRequest,
    Heartbeat,
    HeartbeatReply,
    ResultBatch,
)

__all__ = ["LinkClient", "answer", "enrol_request", "parse", "unreachable"]

_M = TypeVar("_M", bound=BaseModel)

#: Seconds a call may take before the controller counts as unreachable for this attempt.
DEFAULT_TIMEOUT_S = 10.0


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:200]


def unreachable(base_url: object, exc: httpx.HTTPError, what: str) -> LinkUnavailable:
    return LinkUnavailable(
        f"controller {base_url} unreachable ({what}): {exc or type(exc).__name__}"
    )


def answer(base_url: object, response: httpx.Response, what: str) -> Any:
    """The JSON body of the controller's answer, or our error for a refusal or failure
    (shared by the agent's client and the hollow nodes' async one: one mapping)."""
    if response.status_code >= 500:
        raise LinkUnavailable(
            f"controller {base_url} failed {what}: HTTP {response.status_code} {_detail(response)}",
            status=response.status_code,
        )
    if response.status_code >= 400:
        raise LinkError(
            f"controller {base_url} refused {what}: HTTP {response.status_code} "
            f"{_detail(response)}",
            status=response.status_code,
        )
    try:
        return response.json()
    except ValueError as exc:
        raise LinkError(
            f"controller {base_url} answered {what} with something that is not JSON"
        ) from exc


def _call(client: httpx.Client, path: str, body: dict[str, Any], what: str) -> Any:
    try:
        response = client.post(path, json=body)
    except httpx.HTTPError as exc:
        raise unreachable(client.base_url, exc, what) from exc
    return answer(client.base_url, response, what)


def _client(
    url: str,
    cert_pem: str,
    timeout: float,
    token: str | None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=url,
        verify=pinned_context(cert_pem),
        timeout=timeout,
        headers=headers,
        transport=transport,
    )


def enrol_request(
    url: str, cert_pem: str, request: EnrolRequest, *, timeout: float = DEFAULT_TIMEOUT_S
) -> EnrolReply:
    """POST the enrolment (no bearer: the join token's secret is in the body)."""
    with _client(url, cert_pem, timeout, None) as client:
        body = _call(client, ENROL_PATH, request.model_dump(mode="json"), "the enrolment")
    return parse(EnrolReply, body, url, "enrolment")


def parse(model: type[_M], body: Any, url: str, what: str) -> _M:
    try:
        return model.model_validate(body)
    except ValueError as exc:
        raise LinkError(f"controller {url} answered the {what} out of protocol: {exc}") from exc


class LinkClient:
    """One enrolled node's calls to its controller; thread-safe (httpx's pool is)."""

    def __init__(
        self,
        url: str,
        cert_pem: str,
        node_id: str,
        credential: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport``: httpx's, for unit tests of the error mapping only (default: TCP)."""
        self.url = url
        self.node_id = node_id
        self._client = _client(url, cert_pem, timeout, credential, transport)

    def heartbeat(self, heartbeat: Heartbeat) -> HeartbeatReply:
        body = _call(
            self._client,
            HEARTBEAT_PATH.format(node_id=self.node_id),
            heartbeat.wire(),
            "the heartbeat",
        )
        return parse(HeartbeatReply, body, self.url, "heartbeat")

    def post_results(self, batch: ResultBatch) -> int:
        """Send one batch; returns the seq up to which the controller stored it."""
        body = _call(
            self._client,
            RESULTS_PATH.format(node_id=self.node_id),
            batch.model_dump(mode="json"),
            "a results batch",
        )
        stored = body.get("stored_through") if isinstance(body, dict) else None
        if not isinstance(stored, int) or isinstance(stored, bool):
            raise LinkError(
                f"controller {self.url} answered a results batch without an integer stored_through"
            )
        return stored

    def close(self) -> None:
        self._client.close()
