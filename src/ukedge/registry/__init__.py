"""OCI distribution client: push, pull, tags, search and login against any OCI registry.

Used by the CLI and by the host agent (which pulls with :func:`pull` into its own store). The
ukedge hub is one such registry; CNCF distribution, zot or Harbor are others.

What talks HTTP (the client, auth, transfers, login, search: httpx) loads on first use, so that
the host's local commands, which only name a progress type or the default registry, do not
import an HTTP stack.
"""

import typing

from ukedge._lazy import lazy_exports
from ukedge.registry._credentials import (
    AUTH_FILE_ENV,
    PASSWORD_ENV,
    USER_ENV,
    Credentials,
    CredentialStore,
    credentials_for,
)
from ukedge.registry._progress import BlobOutcome, NullProgress, TransferProgress
from ukedge.registry._settings import (
    DEFAULT_PLATFORM,
    DEFAULT_REGISTRY_ENV,
    INSECURE_REGISTRIES_ENV,
    default_registry,
    is_insecure,
    registry_url,
    remote_reference,
)
from ukedge.registry._state import BlobLocations, UploadRecord, UploadSessions

if typing.TYPE_CHECKING:
    from ukedge.registry._auth import Challenge, RegistryAuth, parse_challenge
    from ukedge.registry._client import (
        DEFAULT_CHUNK_SIZE,
        MANIFEST_MEDIA_TYPES,
        MAX_MANIFEST_SIZE,
        RegistryClient,
        RemoteManifest,
    )
    from ukedge.registry._login import login, logout
    from ukedge.registry._search import SearchHit, list_tags, search
    from ukedge.registry._signatures import (
        SignedManifest,
        fetch_signatures,
        sign,
        sign_image,
        signature_tag,
        verify,
        verify_image,
    )
    from ukedge.registry._transfer import (
        ClientOptions,
        blob_label,
        client_for,
        pull,
        push,
        push_target,
        select_platform,
    )

__all__ = [
    "AUTH_FILE_ENV",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PLATFORM",
    "DEFAULT_REGISTRY_ENV",
    "INSECURE_REGISTRIES_ENV",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "PASSWORD_ENV",
    "USER_ENV",
    "BlobLocations",
    "BlobOutcome",
    "Challenge",
    "ClientOptions",
    "CredentialStore",
    "Credentials",
    "NullProgress",
    "RegistryAuth",
    "RegistryClient",
    "RemoteManifest",
    "SearchHit",
    "SignedManifest",
    "TransferProgress",
    "UploadRecord",
    "UploadSessions",
    "blob_label",
    "client_for",
    "credentials_for",
    "default_registry",
    "fetch_signatures",
    "is_insecure",
    "list_tags",
    "login",
    "logout",
    "parse_challenge",
    "pull",
    "push",
    "push_target",
    "registry_url",
    "remote_reference",
    "search",
    "select_platform",
    "sign",
    "sign_image",
    "signature_tag",
    "verify",
    "verify_image",
]

_LAZY = {
    "Challenge": "ukedge.registry._auth",
    "RegistryAuth": "ukedge.registry._auth",
    "parse_challenge": "ukedge.registry._auth",
    "DEFAULT_CHUNK_SIZE": "ukedge.registry._client",
    "MANIFEST_MEDIA_TYPES": "ukedge.registry._client",
    "MAX_MANIFEST_SIZE": "ukedge.registry._client",
    "RegistryClient": "ukedge.registry._client",
    "RemoteManifest": "ukedge.registry._client",
    "login": "ukedge.registry._login",
    "logout": "ukedge.registry._login",
    "SearchHit": "ukedge.registry._search",
    "list_tags": "ukedge.registry._search",
    "search": "ukedge.registry._search",
    "SignedManifest": "ukedge.registry._signatures",
    "fetch_signatures": "ukedge.registry._signatures",
    "sign": "ukedge.registry._signatures",
    "sign_image": "ukedge.registry._signatures",
    "signature_tag": "ukedge.registry._signatures",
    "verify": "ukedge.registry._signatures",
    "verify_image": "ukedge.registry._signatures",
    "ClientOptions": "ukedge.registry._transfer",
    "blob_label": "ukedge.registry._transfer",
    "client_for": "ukedge.registry._transfer",
    "pull": "ukedge.registry._transfer",
    "push": "ukedge.registry._transfer",
    "push_target": "ukedge.registry._transfer",
    "select_platform": "ukedge.registry._transfer",
}

__getattr__ = lazy_exports(globals(), _LAZY)
