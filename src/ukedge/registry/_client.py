"""``RegistryClient``: one registry, spoken to over the OCI distribution API (v1.1).

Every request goes through one ``httpx.Client`` (thread-safe, connection-pooled) so that worker
threads of a push or pull share connections and tokens. Blobs are streamed: a download goes
piece by piece into a store :class:`~ukedge.image.BlobWriter`, which verifies the digest before
anything is kept; uploads (one ``PUT`` or resumable chunks) are :mod:`ukedge.registry._upload`'s,
sent through this client's requests.

Request bodies are bytes of at most ``chunk_size``, never one-shot streams, so a request that
meets an auth challenge (an expired token in a long push) can be sent again.

Long on purpose: one short method per verb of the distribution API, all over one request path
(auth challenges, retries, error mapping); uploads, transfers and progress are apart already.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from ukedge import __version__
from ukedge.errors import (
    AuthenticationError,
    DigestMismatchError,
    RegistryError,
    UsageError,
)
from ukedge.image import Descriptor, ImageStore, digest_bytes, mediatypes
from ukedge.paths import home
from ukedge.registry._auth import RegistryAuth, parse_challenge
from ukedge.registry._credentials import Credentials, credentials_for
from ukedge.registry._errors import error_from_response, raise_if_cancelled, transport_errors
from ukedge.registry._progress import BlobOutcome, ByteProgress, ignore_bytes
from ukedge.registry._settings import registry_url
from ukedge.registry._state import BlobLocations, UploadSessions
from ukedge.registry._upload import BlobUploader

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "RegistryClient",
    "RemoteManifest",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 8 << 20
#: Registries (and the hub) refuse larger manifests; so do we, before reading them whole.
MAX_MANIFEST_SIZE = 4 << 20
MANIFEST_MEDIA_TYPES = (
    mediatypes.OCI_MANIFEST,
    mediatypes.OCI_INDEX,
    mediatypes.DOCKER_MANIFEST,
    mediatypes.DOCKER_MANIFEST_LIST,
)
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_PIECE = 1 << 20
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_MAX_PAGES = 10000
#: A manifest PUT answered with one of these codes is tried again (see ``put_manifest``).
_LAGGING_BLOB_CODES = frozenset({"DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"})
#: Answers that mean "try again shortly" (overload, a proxy between restarts, rate limits).
_RETRY_STATUS = frozenset({429, 502, 503, 504})
_T = TypeVar("_T")


@dataclass(frozen=True)
class RemoteManifest:
    """A manifest exactly as the registry sent it; ``digest`` is the hash of ``data``."""

    data: bytes
    media_type: str
    digest: str

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(mediaType=self.media_type, digest=self.digest, size=len(self.data))

    def json(self) -> Any:
        return json.loads(self.data)


def _refused(exc: BaseException) -> bool:
    """Nothing listens at the address: the address is wrong or the registry is down, and a
    retry a second later would only delay the error (as ``docker push`` does not)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retryable(exc: RegistryError) -> bool:
    """A dropped connection, a timeout or an overloaded registry: worth another try."""
    if isinstance(exc.__cause__, httpx.TransportError):
        return not _refused(exc.__cause__)
    return exc.status in _RETRY_STATUS


class RegistryClient:
    """A client for one registry host (``127.0.0.1:5000``, ``hub.example.org``).

    ``credentials`` default to ``ukedge login``'s file (or ``UKEDGE_REGISTRY_USER``/``_PASSWORD``);
    without any the client pulls anonymously where the registry allows it. ``transport`` is for
    tests and proxies. ``state_dir`` holds resumable uploads and known blob locations.
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool | None = None,
        credentials: Credentials | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_workers: int = 4,
        state_dir: Path | None = None,
        retries: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.registry = registry
        self.base_url = registry_url(registry, insecure)
        self.chunk_size = chunk_size
        self.max_workers = max(1, max_workers)
        #: Transient failures (dropped connections, 429/502/503/504) are retried this many
        #: times, after retry_delay, 2×, 4×… seconds; uploads and downloads continue where the
        #: failed attempt stopped.
        self.retries = max(0, retries)
        self.retry_delay = retry_delay
        self.auth = RegistryAuth(
            registry, credentials if credentials is not None else credentials_for(registry)
        )
        self.state_dir = state_dir if state_dir is not None else home() / "registry"
        self.uploads = UploadSessions(self.state_dir)
        self.locations = BlobLocations(self.state_dir)
        self._uploader = BlobUploader(self)
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=self.auth,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            headers={"User-Agent": f"ukedge/{__version__}"},
            limits=httpx.Limits(max_connections=self.max_workers * 2 + 4),
        )

    @classmethod
    def for_url(cls, url: str, **options: Any) -> RegistryClient:
        """A client for a registry given as a URL (``http://127.0.0.1:5000``), as the host agent's
        ``--hub URL`` names it: the scheme decides plain HTTP or HTTPS."""
        parsed = httpx.URL(url if "://" in url else f"https://{url}")
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.host
            or parsed.path not in ("", "/")
        ):
            raise UsageError(f"{url!r} is not a registry URL: expected http(s)://HOST[:PORT]")
        host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
        registry = f"{host}:{parsed.port}" if parsed.port else host
        options.setdefault("insecure", parsed.scheme == "http")
        return cls(registry, **options)

    # -- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _url(self, location: str) -> str:
        """Absolute form of a ``Location`` header, which registries may send relative."""
        return str(self._http.base_url.join(location))

    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        ok: Collection[int],
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        retry: bool | None = None,
        retry_codes: Collection[str] = (),
    ) -> httpx.Response:
        """One request; GET and HEAD (or ``retry=True``) are retried on transient failures and
        on the registry error codes in ``retry_codes``."""

        def once() -> httpx.Response:
            with transport_errors(self.registry, self.base_url, what):
                response = self._http.request(
                    method, url, content=content, headers=headers, params=params
                )
            if response.status_code not in ok:
                raise error_from_response(response, what, self.registry)
            return response

        if retry is None:
            retry = method in ("GET", "HEAD")
        return self._with_retries(what, once, retry_codes) if retry else once()

    def _with_retries(
        self, what: str, attempt: Callable[[], _T], codes: Collection[str] = ()
    ) -> _T:
        for n in range(self.retries + 1):
            try:
                return attempt()
            except RegistryError as exc:
                if n >= self.retries or not (_retryable(exc) or exc.code in codes):
                    raise
                delay = self.retry_delay * 2**n
                said = str(exc) if str(exc).startswith(what) else f"{what} failed ({exc})"
                log.warning("%s; retrying in %.1f s", said, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- registry --------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers the API base (``/v2/``), authenticating if it asks."""
        self._send("GET", "/v2/", what=f"contact {self.registry}", ok={200})

    def check_credentials(self) -> bool:
        """Verify our credentials the way the registry asks for them.

        Returns ``False`` when the registry asks for none (nothing to verify), ``True`` when it
        asked and accepted them; raises :class:`AuthenticationError` when it refused them.
        """
        what = f"log in to {self.registry}"
        with transport_errors(self.registry, self.base_url, what):
            response = self._http.get("/v2/", auth=None)
        if response.status_code == 200:
            return False
        if response.status_code != 401:
            raise error_from_response(response, what, self.registry)
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        creds = self.auth.credentials
        if challenge is None or creds is None:
            raise error_from_response(response, what, self.registry)
        if challenge.scheme == "basic":
            with transport_errors(self.registry, self.base_url, what):
                response = self._http.get(
                    "/v2/", auth=None, headers={"Authorization": creds.basic_header()}
                )
            if response.status_code != 200:
                raise AuthenticationError(
                    f"{what}: {self.registry} refused the password of {creds.username!r}",
                    status=response.status_code,
                )
            return True
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise AuthenticationError(
                f"{what}: unsupported authentication scheme {challenge.scheme!r}"
            )
        with transport_errors(self.registry, self.base_url, what):
            token_response = self._http.send(self.auth.token_request(challenge), auth=None)
        try:
            self.auth.read_token(token_response, challenge)
        finally:
            token_response.close()
        return True

    def _paged(self, path: str, key: str, page_size: int | None, what: str) -> list[str]:
        url: str | None = path
        params = {"n": str(page_size)} if page_size else None
        names: list[str] = []
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            if url is None or url in seen:
                break
            seen.add(url)
            response = self._send("GET", url, what=what, ok={200}, params=params)
            try:
                items = response.json().get(key) or []
            except (ValueError, AttributeError) as exc:
                raise RegistryError(f"{what}: {self.registry} sent no JSON {key!r} list") from exc
            names += [str(item) for item in items]
            match = _LINK_NEXT.search(response.headers.get("Link", ""))
            url = self._url(match.group(1)) if match else None
            params = None
        return names

    def catalog(self, *, page_size: int | None = None) -> list[str]:
        """Every repository name (``/v2/_catalog``), following ``Link`` pagination."""
        return self._paged(
            "/v2/_catalog", "repositories", page_size, f"list repositories of {self.registry}"
        )

    def tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of ``repository``, following ``Link`` pagination."""
        return self._paged(
            f"/v2/{repository}/tags/list", "tags", page_size, f"list tags of {repository}"
        )

    # -- manifests -------------------------------------------------------------------------------

    def _get_limited(
        self, url: str, *, what: str, limit: int, headers: dict[str, str] | None = None
    ) -> tuple[bytes, httpx.Headers]:
        """GET a small body whole (a manifest, a config), refusing more than ``limit`` bytes."""

        def once() -> tuple[bytes, httpx.Headers]:
            body = bytearray()
            with (
                transport_errors(self.registry, self.base_url, what),
                self._http.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code != 200:
                    response.read()
                    raise error_from_response(response, what, self.registry)
                for piece in response.iter_bytes(_PIECE):
                    body += piece
                    if len(body) > limit:
                        raise RegistryError(f"{what}: larger than {limit} bytes; refused")
                return bytes(body), response.headers

        return self._with_retries(what, once)

    def get_manifest(self, repository: str, reference: str) -> RemoteManifest:
        """Fetch a manifest or index by tag or digest, checking its digest."""
        what = f"pull manifest {repository}{'@' if ':' in reference else ':'}{reference}"
        data, response_headers = self._get_limited(
            f"/v2/{repository}/manifests/{reference}",
            what=what,
            limit=MAX_MANIFEST_SIZE,
            headers={"Accept": _ACCEPT},
        )
        content_type = response_headers.get("Content-Type", "")
        header_digest = response_headers.get("Docker-Content-Digest")
        digest = digest_bytes(data)
        if reference.startswith("sha256:") and reference != digest:
            raise DigestMismatchError(reference, digest, f"manifest {repository}")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise DigestMismatchError(header_digest, digest, f"manifest {repository}:{reference}")
        media_type = content_type.split(";")[0].strip()
        if media_type not in MANIFEST_MEDIA_TYPES:
            try:
                media_type = str(json.loads(data).get("mediaType") or "")
            except (ValueError, AttributeError):
                media_type = ""
        if media_type not in MANIFEST_MEDIA_TYPES:
            raise RegistryError(f"{what}: unsupported manifest media type {content_type!r}")
        return RemoteManifest(data, media_type, digest)

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor of a manifest, or ``None`` when the registry has no such tag or digest."""
        what = f"check manifest {repository}:{reference}"
        response = self._send(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            what=what,
            ok={200, 404},
            headers={"Accept": _ACCEPT},
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            return None
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return Descriptor(
            mediaType=media_type,
            digest=digest,
            size=int(response.headers.get("Content-Length") or 0),
        )

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Store a manifest under a tag (or its digest); returns its digest."""
        what = f"push manifest {repository}:{reference}"
        # The blobs were just pushed, so a registry that cannot see one of them is racing
        # another push of the same blob (CNCF distribution's filesystem driver writes the
        # repository's blob link in place: a reader can find it empty,
        # distribution/distribution#4489); a moment later the link is whole.
        response = self._send(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            what=what,
            ok={200, 201, 202},
            content=data,
            headers={"Content-Type": media_type},
            retry=True,
            retry_codes=_LAGGING_BLOB_CODES,
        )
        digest = digest_bytes(data)
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored.startswith("sha256:") and stored != digest:
            raise RegistryError(
                f"{what}: registry stored it as {stored}, but its bytes hash to {digest}"
            )
        return digest

    def referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> list[Descriptor] | None:
        """The manifests whose ``subject`` is ``digest`` (OCI 1.1 referrers API), filtered by
        ``artifact_type`` here too (a registry may ignore the filter); ``None`` when the
        registry has no referrers API (it answers 404, as CNCF distribution 2.8 does)."""
        what = f"list referrers of {repository}@{digest}"
        response = self._send(
            "GET",
            f"/v2/{repository}/referrers/{digest}",
            what=what,
            ok={200, 404},
            params={"artifactType": artifact_type} if artifact_type else None,
        )
        if response.status_code == 404:
            return None
        try:
            found = [Descriptor.model_validate(m) for m in response.json().get("manifests") or []]
        except (ValueError, AttributeError) as exc:
            raise RegistryError(f"{what}: {self.registry} sent no image index: {exc}") from exc
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

    # -- blobs -----------------------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob in ``repository``, or ``None`` when the registry lacks it there."""
        response = self._send(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            what=f"check blob {digest} in {repository}",
            ok={200, 404},
        )
        if response.status_code == 404:
            return None
        return int(response.headers.get("Content-Length") or 0)

    def download_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        store: ImageStore,
        on_progress: ByteProgress = ignore_bytes,
        *,
        cancel: threading.Event | None = None,
    ) -> None:
        """Stream a blob into ``store``; a wrong digest stores nothing (DigestMismatchError).

        A connection lost midway is retried with ``Range`` from the bytes already written.
        """
        digest = descriptor.digest
        what = f"pull blob {digest} from {repository}"
        url = f"/v2/{repository}/blobs/{digest}"
        with store.blob_writer(digest) as writer:

            def once() -> None:
                have = writer.size
                headers = {"Range": f"bytes={have}-"} if have else None
                with (
                    transport_errors(self.registry, self.base_url, what),
                    self._http.stream("GET", url, headers=headers) as response,
                ):
                    if response.status_code not in (200, 206):
                        response.read()
                        raise error_from_response(response, what, self.registry)
                    # A registry that ignores Range sends everything again: skip what we have.
                    skip = have if response.status_code == 200 else 0
                    if response.status_code == 206 and not response.headers.get(
                        "Content-Range", ""
                    ).startswith(f"bytes {have}-"):
                        raise RegistryError(f"{what}: the registry answered a different range")
                    for piece in response.iter_bytes():
                        if skip:
                            cut = min(skip, len(piece))
                            piece, skip = piece[cut:], skip - cut
                            if not piece:
                                continue
                        raise_if_cancelled(cancel, what)
                        writer.write(piece)
                        if writer.size > descriptor.size:
                            raise RegistryError(
                                f"{what}: the registry sent more than the {descriptor.size} bytes "
                                "the manifest declares; nothing was stored"
                            )
                        on_progress(writer.size)

            self._with_retries(what, once)
            writer.commit()

    def fetch_blob(self, repository: str, digest: str, *, limit: int = MAX_MANIFEST_SIZE) -> bytes:
        """A small blob (a config) in memory, digest-checked."""
        what = f"pull blob {digest} from {repository}"
        data, _ = self._get_limited(f"/v2/{repository}/blobs/{digest}", what=what, limit=limit)
        actual = digest_bytes(data)
        if actual != digest:
            raise DigestMismatchError(digest, actual)
        return data

    # -- uploads (the protocol is in ukedge.registry._upload) -----------------------------------

    def mount_blob(self, repository: str, digest: str, source: str) -> tuple[bool, str | None]:
        """Ask the registry to link ``digest`` from ``source`` into ``repository``.

        Returns ``(True, None)`` when mounted, ``(False, location)`` when the registry opened an
        upload session instead (so the caller uploads there), ``(False, None)`` when refused.
        """
        return self._uploader.mount(repository, digest, source)

    def upload_status(self, location: str, *, hint: int = 0) -> tuple[str, int]:
        """Ask where an upload session stands: ``(location, bytes received)``."""
        return self._uploader.status(location, hint=hint)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        open_source: Callable[[], IO[bytes]],
        *,
        mount_from: Sequence[str] = (),
        on_progress: ByteProgress = ignore_bytes,
        cancel: threading.Event | None = None,
    ) -> BlobOutcome:
        """Put a blob into ``repository``: resume, mount, one ``PUT``, or chunks, in that order.

        A transient failure is retried; a chunked upload then continues from the registry's
        offset (the same path as resuming after an interruption).
        """
        return self._uploader.upload(
            repository,
            digest,
            size,
            open_source,
            mount_from=mount_from,
            on_progress=on_progress,
            cancel=cancel,
        )
