"""Docker token authentication: users, robot tokens, scopes, signed bearer tokens.

The flow every registry client knows: a request without a valid token gets ``401`` and
``WWW-Authenticate: Bearer realm=…,service=…,scope=…``; the client calls the realm (``/token``)
with HTTP Basic credentials (a user's password or a robot token) and the scopes it wants; the hub
answers with a short-lived JWT (EdDSA, key made on first start, stored 0600 in the data dir)
whose ``access`` claim lists exactly what was both asked for and allowed. Each request is then
checked against that claim, so a token for one repository cannot touch another.

Passwords are stored as scrypt hashes; robot tokens (``ukr_<id>_<secret>``, shown once) as the
SHA-256 of their random secret. Grants are scope patterns: ``repository:team/*:pull,push``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ukedge import paths
from ukedge.errors import HubError, UsageError
from ukedge.hub._db import Database, robot_tokens, users
from ukedge.hub._errors import Code, DistributionError

__all__ = [
    "ACTIONS",
    "DEFAULT_USER_GRANTS",
    "Authority",
    "Grant",
    "Principal",
    "RobotToken",
    "TokenReply",
    "hash_password",
    "parse_grant",
    "verify_password",
]

ACTIONS = frozenset({"pull", "push", "delete", "*"})
DEFAULT_USER_GRANTS = ("repository:*:*", "registry:catalog:*")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_ISSUER = "ukedge-hub"
_AUTH_CACHE_S = 2.0
_FAIL_LIMIT = 10
_FAIL_WINDOW = 60.0


@dataclass(frozen=True)
class Grant:
    """``type:pattern:actions`` — what a principal may be given tokens for."""

    type: str
    pattern: str
    actions: frozenset[str]

    def allows(self, type_: str, name: str, action: str) -> bool:
        return (
            self.type == type_
            and fnmatch.fnmatchcase(name, self.pattern)
            and ("*" in self.actions or action in self.actions)
        )

    def __str__(self) -> str:
        return f"{self.type}:{self.pattern}:{','.join(sorted(self.actions))}"


def parse_grant(text: str) -> Grant:
    """Parse ``repository:NAME:pull,push`` (NAME may be a glob); UsageError if malformed."""
    type_, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    parts = frozenset(a.strip() for a in actions.split(",") if a.strip())
    if not sep or not sep2 or not name or type_ not in ("repository", "registry") or not parts:
        raise UsageError(
            f"invalid scope {text!r}: write repository:NAME:ACTIONS, e.g. "
            "repository:team/app:pull,push (NAME may use * globs)"
        )
    unknown = parts - ACTIONS
    if unknown:
        raise UsageError(f"invalid scope {text!r}: unknown action(s) {', '.join(sorted(unknown))}")
    return Grant(type_, name, parts)


def _requested(scope: str) -> tuple[str, str, list[str]] | None:
    type_, _, rest = scope.partition(":")
    name, sep, actions = rest.rpartition(":")
    if not sep or not name:
        return None
    return type_, name, [a for a in actions.split(",") if a]


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    enc = base64.b64encode
    params = f"{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}"
    return f"scrypt${params}${enc(salt).decode()}${enc(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            dklen=32,
            n=int(n),
            r=int(r),
            p=int(p),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


@dataclass(frozen=True)
class Principal:
    """Who asked for a token; ``anonymous`` gets only anonymous-pull grants."""

    name: str
    grants: tuple[Grant, ...]
    anonymous: bool = False


@dataclass(frozen=True)
class RobotToken:
    name: str
    token: str
    grants: tuple[str, ...]


@dataclass(frozen=True)
class TokenReply:
    token: str
    expires_in: int
    issued_at: str
    access: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": self.issued_at,
        }


def _load_key(path: Path) -> Ed25519PrivateKey:
    """The signing key, created 0600 on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise HubError(f"{path} is not an Ed25519 key; delete it to make a new one")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    paths.write_private(path, pem)
    return key


class Authority:
    """Issues and checks tokens for one hub; also manages its users and robot tokens."""

    def __init__(
        self,
        db: Database,
        key_path: Path,
        *,
        service: str,
        mode: str = "auto",
        anonymous_pull: tuple[str, ...] = (),
        ttl: int = 300,
    ) -> None:
        self.db = db
        self.key_path = key_path
        self.service = service
        self.mode = mode
        self.anonymous_pull = anonymous_pull
        self.ttl = ttl
        self._key: Ed25519PrivateKey | None = None
        self._public: Ed25519PublicKey | None = None
        self._enabled: tuple[float, bool] = (0.0, False)
        # Verified tokens, so a pull's many requests verify the signature once.
        self._verified: dict[str, dict[str, Any]] = {}
        # Recent failed logins per client address, to slow down password guessing.
        self._failures: dict[str, list[float]] = {}

    def throttle(self, client: str) -> None:
        """Refuse (429) a client with too many failed logins in the last minute."""
        now = time.monotonic()
        recent = [t for t in self._failures.get(client, []) if now - t < _FAIL_WINDOW]
        self._failures[client] = recent
        if len(recent) >= _FAIL_LIMIT:
            retry = int(_FAIL_WINDOW - (now - recent[0])) + 1
            raise DistributionError(
                Code.TOOMANYREQUESTS,
                f"too many failed logins from {client}; try again in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    def _failed(self, client: str) -> None:
        if len(self._failures) > 10000:
            self._failures.clear()
        self._failures.setdefault(client, []).append(time.monotonic())

    @property
    def key(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = _load_key(self.key_path)
            self._public = self._key.public_key()
        return self._key

    @property
    def enabled(self) -> bool:
        """``auto`` turns auth on once any user or robot token exists (re-checked every 2 s)."""
        if self.mode != "auto":
            return self.mode == "on"
        checked, value = self._enabled
        now = time.monotonic()
        if now - checked > _AUTH_CACHE_S:
            with self.db.read() as conn:
                count = conn.execute(select(func.count()).select_from(users)).scalar_one()
                count += conn.execute(select(func.count()).select_from(robot_tokens)).scalar_one()
            value = count > 0
            self._enabled = (now, value)
        return value

    # -- principals ---------------------------------------------------------------------------

    def add_user(self, name: str, password: str, grants: list[str] | None = None) -> None:
        if not name or ":" in name or len(name) > 128:
            raise UsageError(f"invalid user name {name!r}: 1-128 characters, no ':'")
        if len(password) < 8:
            raise UsageError("password too short: use at least 8 characters")
        parsed = [str(parse_grant(g)) for g in (grants or DEFAULT_USER_GRANTS)]
        try:
            with self.db.write() as conn:
                conn.execute(
                    users.insert().values(
                        name=name,
                        password_hash=hash_password(password),
                        grants=json.dumps(parsed),
                        created_at=time.time(),
                    )
                )
        except IntegrityError as exc:
            raise UsageError(f"user {name!r} exists already") from exc
        self._enabled = (0.0, False)

    def create_robot(
        self, name: str, grants: list[str], expires_in: float | None = None
    ) -> RobotToken:
        if not name or len(name) > 128:
            raise UsageError(f"invalid robot token name {name!r}")
        if not grants:
            raise UsageError("a robot token needs at least one --scope")
        parsed = [str(parse_grant(g)) for g in grants]
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        try:
            with self.db.write() as conn:
                conn.execute(
                    robot_tokens.insert().values(
                        id=token_id,
                        name=name,
                        secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
                        grants=json.dumps(parsed),
                        created_at=time.time(),
                        expires_at=time.time() + expires_in if expires_in else None,
                    )
                )
        except IntegrityError as exc:
            raise UsageError(f"robot token {name!r} exists already") from exc
        self._enabled = (0.0, False)
        return RobotToken(name, f"ukr_{token_id}_{secret}", tuple(parsed))

    def authenticate(self, username: str, password: str, client: str = "") -> Principal:
        """Check Basic credentials: a robot token (any user name) or a user's password.

        ``client`` (the remote address) is throttled after repeated failures.
        """
        self.throttle(client)
        if password.startswith("ukr_"):
            _, token_id, secret = [*password.split("_", 2), "", ""][:3]
            with self.db.read() as conn:
                row = conn.execute(
                    select(robot_tokens).where(robot_tokens.c.id == token_id)
                ).first()
            if (
                row is not None
                and hmac.compare_digest(
                    row.secret_hash, hashlib.sha256(secret.encode()).hexdigest()
                )
                and (row.expires_at is None or row.expires_at > time.time())
            ):
                return Principal(row.name, tuple(parse_grant(g) for g in json.loads(row.grants)))
        else:
            with self.db.read() as conn:
                row = conn.execute(select(users).where(users.c.name == username)).first()
            if row is not None and verify_password(password, row.password_hash):
                return Principal(username, tuple(parse_grant(g) for g in json.loads(row.grants)))
        self._failed(client)
        raise DistributionError(Code.UNAUTHORIZED, "invalid user name, password or token")

    def anonymous(self) -> Principal:
        grants = tuple(Grant("repository", p, frozenset({"pull"})) for p in self.anonymous_pull)
        return Principal("", grants, anonymous=True)

    # -- tokens -------------------------------------------------------------------------------

    def issue(self, principal: Principal, scopes: list[str]) -> TokenReply:
        """A token granting the intersection of ``scopes`` and the principal's grants."""
        access: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            for item in scope.split(" "):
                parsed = _requested(item)
                if parsed is None:
                    continue
                type_, name, actions = parsed
                allowed = [
                    a for a in actions if any(g.allows(type_, name, a) for g in principal.grants)
                ]
                if allowed:
                    have = access.setdefault((type_, name), [])
                    have.extend(a for a in allowed if a not in have)
        now = int(time.time())
        claims = {
            "iss": _ISSUER,
            "sub": principal.name,
            "aud": self.service,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
            "access": [{"type": t, "name": n, "actions": acts} for (t, n), acts in access.items()],
        }
        token = jwt.encode(claims, self.key, algorithm="EdDSA")
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return TokenReply(token, self.ttl, issued, claims["access"])  # type: ignore[arg-type]

    def _decode(self, token: str) -> dict[str, Any] | None:
        cached = self._verified.get(token)
        if cached is not None:
            if cached["exp"] > time.time():
                return cached
            del self._verified[token]
        _ = self.key
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,  # type: ignore[arg-type]
                algorithms=["EdDSA"],
                audience=self.service,
                issuer=_ISSUER,
                # A token without an expiry would be good forever: refuse it, even signed.
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return None
        if len(self._verified) > 4096:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def check(
        self,
        authorization: str | None,
        type_: str,
        name: str,
        actions: tuple[str, ...],
        realm: str,
    ) -> None:
        """Allow the request or raise 401 with the challenge that tells the client what to ask."""
        if not self.enabled:
            return
        anon = self.anonymous()
        if actions and all(any(g.allows(type_, name, a) for g in anon.grants) for a in actions):
            return
        claims: dict[str, Any] | None = None
        if authorization and authorization[:7].lower() == "bearer ":
            claims = self._decode(authorization[7:].strip())
        scope = f"{type_}:{name}:{','.join(actions)}" if name else ""
        if claims is not None:
            granted: set[str] = set()
            for entry in claims.get("access", []):
                if entry.get("type") == type_ and entry.get("name") == name:
                    granted.update(entry.get("actions", []))
            if not name or all(a in granted or "*" in granted for a in actions):
                return
        challenge = f'Bearer realm="{realm}",service="{self.service}"'
        if scope:
            challenge += f',scope="{scope}"'
        if claims is not None:
            challenge += ',error="insufficient_scope"'
        raise DistributionError(
            Code.UNAUTHORIZED,
            "authentication required" if claims is None else f"token does not grant {scope}",
            detail=[{"Type": type_, "Name": name, "Action": a} for a in actions] or None,
            headers={"WWW-Authenticate": challenge},
        )
