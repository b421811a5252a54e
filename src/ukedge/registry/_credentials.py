"""Registry credentials: ``ukedge login`` writes them, every client reads them.

The file is ``$UKEDGE_AUTH_FILE`` when set, else ``<ukedge home>/auth.json``, in docker's
``config.json`` shape (``{"auths": {"HOST": {"auth": base64("user:password")}}}``) so the format
is familiar. It holds secrets, so it is created with mode 0600 and replaced atomically (temp
file + rename) so a crash never leaves half a file. ``UKEDGE_REGISTRY_USER`` and
``UKEDGE_REGISTRY_PASSWORD``, when both are set, override the file for every registry (CI).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ukedge.errors import UsageError
from ukedge.paths import home

__all__ = [
    "AUTH_FILE_ENV",
    "PASSWORD_ENV",
    "USER_ENV",
    "CredentialStore",
    "Credentials",
    "credentials_for",
]

AUTH_FILE_ENV = "UKEDGE_AUTH_FILE"
USER_ENV = "UKEDGE_REGISTRY_USER"
PASSWORD_ENV = "UKEDGE_REGISTRY_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


class CredentialStore:
    """The credentials file: one entry per registry host."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            explicit = os.environ.get(AUTH_FILE_ENV)
            path = Path(explicit).expanduser() if explicit else home() / "auth.json"
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"auths": {}}
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"{self.path}: unreadable credentials file ({exc}); remove it and log in again"
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("auths", {}), dict):
            raise UsageError(f"{self.path}: not a credentials file (no 'auths' object)")
        data.setdefault("auths", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.path.parent / f".{self.path.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._read()
                yield data
                self._write(data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get(self, registry: str) -> Credentials | None:
        entry = self._read()["auths"].get(registry)
        if not isinstance(entry, dict) or "auth" not in entry:
            return None
        try:
            user, sep, password = (
                base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError, TypeError) as exc:
            raise UsageError(
                f"{self.path}: bad entry for {registry}; run `ukedge login {registry}` again"
            ) from exc
        if not sep:
            raise UsageError(
                f"{self.path}: bad entry for {registry}; run `ukedge login {registry}` again"
            )
        return Credentials(user, password)

    def set(self, registry: str, credentials: Credentials) -> None:
        auth = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        with self._locked() as data:
            data["auths"][registry] = {"auth": auth}

    def remove(self, registry: str) -> bool:
        """Forget ``registry``; ``False`` when there was nothing to forget."""
        if registry not in self._read()["auths"]:
            return False
        with self._locked() as data:
            data["auths"].pop(registry, None)
        return True

    def registries(self) -> list[str]:
        return sorted(self._read()["auths"])


def credentials_for(registry: str, store: CredentialStore | None = None) -> Credentials | None:
    """The credentials to use for ``registry``: the environment first, then the file."""
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user and password is not None:
        return Credentials(user, password)
    return (store or CredentialStore()).get(registry)
