"""Registry authentication: the Docker token flow and HTTP Basic, as an ``httpx.Auth``.

A request goes out with the token we hold for its repository, if any. On ``401`` the registry's
``WWW-Authenticate`` challenge says how to authenticate: ``Bearer realm=…,service=…,scope=…``
means "get a token for that scope from the realm" (with Basic credentials when we have them,
anonymously otherwise), ``Basic`` means "send the credentials". The request is then retried
once. Tokens are cached per repository (the scope grows from ``pull`` to ``pull,push`` as a
push needs it) and dropped when they expire, so a long push fetches a fresh one on its own.

Retrying needs the request body again: callers send bytes, never one-shot streams, on requests
that may be challenged (see ``RegistryClient``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import httpx

from ukedge.errors import AuthenticationError
from ukedge.registry._credentials import Credentials

__all__ = ["Challenge", "RegistryAuth", "parse_challenge"]

_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)/")
_EXPIRY_SLACK_S = 5.0


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge; ``scheme`` is lower-case."""

    scheme: str
    params: dict[str, str]

    @property
    def scopes(self) -> list[str]:
        return self.params.get("scope", "").split()


def parse_challenge(header: str) -> Challenge | None:
    """Parse the first challenge of a ``WWW-Authenticate`` header; ``None`` when there is none."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {
        m.group(1).lower(): (
            m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
        )
        for m in _PARAM.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


@dataclass
class _Token:
    value: str
    expires_at: float
    scopes: tuple[str, ...] = ()


def _mount_scope(request: httpx.Request) -> str | None:
    """The extra scope a cross-repository mount needs: pull on the repository mounted from.

    Registries challenge a mount only for push on the target, so a token that lacks pull on the
    source makes the registry quietly fall back to an upload; asking up front avoids that.
    """
    source = request.url.params.get("from")
    if request.method == "POST" and source and request.url.params.get("mount"):
        return f"repository:{source}:pull"
    return None


def _merge(*groups: Sequence[str]) -> tuple[str, ...]:
    merged: list[str] = []
    for group in groups:
        merged += [s for s in group if s not in merged]
    return tuple(merged)


def _repository(path: str) -> str:
    """The repository a request is about ("" for registry-wide endpoints such as the catalog)."""
    m = _REPO_PATH.match(path)
    return m.group(1) if m else ""


class RegistryAuth(httpx.Auth):
    """Answers registry challenges; one instance per client, shared by its worker threads."""

    def __init__(self, registry: str, credentials: Credentials | None) -> None:
        self.registry = registry
        self.credentials = credentials
        self._tokens: dict[str, _Token] = {}
        self._basic = False
        self._realm: dict[str, str] | None = None
        self._lock = threading.Lock()

    def _cached(self, key: str) -> _Token | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and token.expires_at <= time.monotonic():
                del self._tokens[key]
                token = None
            return token

    def _apply(self, request: httpx.Request, key: str) -> None:
        if self._basic and self.credentials is not None:
            request.headers["Authorization"] = self.credentials.basic_header()
            return
        token = self._cached(key)
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token.value}"

    def token_request(
        self, challenge: Challenge, extra_scopes: Sequence[str] = ()
    ) -> httpx.Request:
        """The request for a token for ``challenge`` (plus ``extra_scopes``) from its realm."""
        params: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in challenge.params:
            params.append(("service", challenge.params["service"]))
        params += [("scope", scope) for scope in _merge(challenge.scopes, extra_scopes)]
        headers = {"Accept": "application/json"}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.basic_header()
        return httpx.Request("GET", challenge.params["realm"], params=params, headers=headers)

    def read_token(self, response: httpx.Response, challenge: Challenge) -> _Token:
        response.read()
        if response.status_code != 200:
            who = f"as {self.credentials.username!r}" if self.credentials else "anonymously"
            scope = " ".join(challenge.scopes) or "registry access"
            raise AuthenticationError(
                f"{self.registry} refused a token for {scope} {who} (HTTP {response.status_code}); "
                f"run `ukedge login {self.registry}` with an account that has access",
                status=response.status_code,
            )
        try:
            body = response.json()
            value = body.get("token") or body.get("access_token")
            expires_in = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError) as exc:
            raise AuthenticationError(
                f"{self.registry}: token endpoint sent no JSON token"
            ) from exc
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"{self.registry}: token endpoint answer has no token")
        return _Token(
            value,
            time.monotonic() + max(expires_in - _EXPIRY_SLACK_S, 1.0),
            _merge(challenge.scopes),
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if request.url.netloc.decode("ascii", "replace") != self.registry:
            # An upload or blob URL on another host (storage redirect): no registry secrets there.
            yield request
            return
        key = _repository(request.url.path)
        extra = _mount_scope(request)
        if extra and self._realm is not None and not self._basic:
            cached = self._cached(key)
            if cached is None or extra not in cached.scopes:
                # Widen the token before the mount, so the registry does not silently decline it.
                held = cached.scopes if cached else ()
                wanted = _merge(held, [f"repository:{key}:pull,push", extra])
                yield from self._fetch(Challenge("bearer", dict(self._realm)), key, wanted)
        self._apply(request, key)
        response = yield request
        if response.status_code != 401:
            return
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return
        if challenge.scheme == "basic":
            if self.credentials is None:
                return
            self._basic = True
            request.headers["Authorization"] = self.credentials.basic_header()
            yield request
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return
        self._realm = {k: v for k, v in challenge.params.items() if k in ("realm", "service")}
        current = self._cached(key)
        wanted = _merge(
            challenge.scopes, current.scopes if current else (), [extra] if extra else []
        )
        yield from self._fetch(challenge, key, wanted)
        self._apply(request, key)
        yield request

    def _fetch(
        self, challenge: Challenge, key: str, scopes: Sequence[str]
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Get a token for ``scopes`` and cache it for ``key``'s requests."""
        wanted = Challenge("bearer", {**challenge.params, "scope": " ".join(scopes)})
        token_response = yield self.token_request(wanted)
        token = self.read_token(token_response, wanted)
        with self._lock:
            self._tokens[key] = token
