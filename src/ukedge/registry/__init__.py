"""OCI distribution client: push, pull, tags, search and login against any OCI registry.

Used by the CLI and by the host agent (which pulls with :func:`pull` into its own store). The
ukedge hub is one such registry; CNCF distribution, zot or Harbor are others.
"""

from ukedge.registry._auth import Challenge, RegistryAuth, parse_challenge
from ukedge.registry._client import (
    DEFAULT_CHUNK_SIZE,
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    RegistryClient,
    RemoteManifest,
)
from ukedge.registry._credentials import (
    AUTH_FILE_ENV,
    PASSWORD_ENV,
    USER_ENV,
    Credentials,
    CredentialStore,
    credentials_for,
)
from ukedge.registry._login import login, logout
from ukedge.registry._progress import BlobOutcome, NullProgress, TransferProgress
from ukedge.registry._search import SearchHit, list_tags, search
from ukedge.registry._settings import (
    DEFAULT_REGISTRY_ENV,
    INSECURE_REGISTRIES_ENV,
    default_registry,
    is_insecure,
    registry_url,
    remote_reference,
)
from ukedge.registry._state import BlobLocations, UploadRecord, UploadSessions
from ukedge.registry._transfer import (
    DEFAULT_PLATFORM,
    ClientOptions,
    blob_label,
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
    "TransferProgress",
    "UploadRecord",
    "UploadSessions",
    "blob_label",
    "credentials_for",
    "default_registry",
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
]
