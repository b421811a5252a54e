"""``login`` and ``logout``: verify credentials against a registry, then remember them."""

from __future__ import annotations

from ukedge.errors import UsageError
from ukedge.registry._client import RegistryClient
from ukedge.registry._credentials import Credentials, CredentialStore

__all__ = ["login", "logout"]


def _check_host(registry: str) -> str:
    registry = registry.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    if not registry or "/" in registry:
        raise UsageError(f"{registry!r} is not a registry host: give HOST or HOST:PORT")
    return registry


def login(
    registry: str,
    username: str,
    password: str,
    *,
    insecure: bool | None = None,
    store: CredentialStore | None = None,
) -> bool:
    """Check ``username``/``password`` with ``registry`` and save them; nothing is saved on failure.

    Returns ``True`` when the registry verified them, ``False`` when it asks for no credentials
    at all (they are saved anyway, for when it starts asking).
    """
    registry = _check_host(registry)
    if not username:
        raise UsageError("a username is needed: pass -u USER")
    credentials = Credentials(username, password)
    with RegistryClient(registry, insecure=insecure, credentials=credentials) as client:
        verified = client.check_credentials()
    (store or CredentialStore()).set(registry, credentials)
    return verified


def logout(registry: str, *, store: CredentialStore | None = None) -> bool:
    """Forget the credentials of ``registry``; ``False`` when none were saved."""
    return (store or CredentialStore()).remove(_check_host(registry))
