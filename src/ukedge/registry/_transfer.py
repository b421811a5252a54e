"""``push`` and ``pull``: move an image between the local store and a registry.

Both transfer only what the other side lacks, several blobs at a time, and report per-blob
progress. A push uploads (or mounts) every blob before the manifest that names them, so the
registry never holds a manifest with a missing blob; a pull verifies every blob into the store
under the store's lease and only then adds and tags the manifest, so a failed pull leaves no
image behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from ukedge.errors import ImageError, RegistryError, UsageError
from ukedge.image import (
    Descriptor,
    ImageIndex,
    ImageManifest,
    ImageStore,
    Platform,
    Reference,
    StoredImage,
    host_platform,
    mediatypes,
    parse_platform,
)
from ukedge.registry._client import DEFAULT_CHUNK_SIZE, RegistryClient, RemoteManifest
from ukedge.registry._progress import BlobOutcome, NullProgress, TransferProgress
from ukedge.registry._settings import DEFAULT_PLATFORM, remote_reference

__all__ = [
    "ClientOptions",
    "blob_label",
    "pull",
    "push",
    "push_target",
    "select_platform",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def blob_label(descriptor: Descriptor) -> str:
    """A short human name for a blob of a ukedge (or container) image."""
    media = descriptor.media_type
    if media in mediatypes.KERNEL_TYPES:
        return "kernel"
    if media in mediatypes.INITRD_TYPES:
        return "initrd"
    if media == mediatypes.CONFIG or media.endswith("config.v1+json"):
        return "config"
    return "layer"


@dataclass(frozen=True)
class ClientOptions:
    """How to build a client when the caller gives none (the CLI's flags)."""

    insecure: bool | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_workers: int = 4


@contextlib.contextmanager
def client_for(
    reference: Reference, client: RegistryClient | None, options: ClientOptions | None
) -> Iterator[RegistryClient]:
    """``client`` when given (it must talk to ``reference``'s registry), else a client of that
    registry made from ``options``, closed on exit: one client serves every request of a
    transfer and what the caller does with the image right after it."""
    if client is not None:
        if reference.registry != client.registry:
            raise UsageError(
                f"{reference} is not on {client.registry}, the registry this client talks to"
            )
        yield client
        return
    assert reference.registry is not None
    opts = options or ClientOptions()
    with RegistryClient(
        reference.registry,
        insecure=opts.insecure,
        chunk_size=opts.chunk_size,
        max_workers=opts.max_workers,
    ) as own:
        yield own


def _run_all(
    client: RegistryClient,
    task: Callable[[_T, threading.Event], None],
    items: Sequence[_T],
    cancel: threading.Event | None = None,
) -> None:
    """Run ``task`` on every item, ``client.max_workers`` at a time.

    The first failure (or Ctrl-C in the caller) sets the shared event, which every transfer checks
    between chunks, so the others stop promptly instead of running to completion. A caller's
    own ``cancel`` event (a host agent's API request going away) stops them the same way.
    """
    if not items:
        return
    cancel = cancel if cancel is not None else threading.Event()
    workers = min(client.max_workers, len(items))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ukedge-xfer") as pool:
        futures = [pool.submit(task, item, cancel) for item in items]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future in done and (exc := future.exception()) is not None:
                    raise exc
        except BaseException:
            cancel.set()
            for future in futures:
                future.cancel()
            raise


def _blobs(manifest: ImageManifest) -> list[Descriptor]:
    """Config and layers, each digest once."""
    seen: dict[str, Descriptor] = {}
    for desc in [manifest.config, *manifest.layers]:
        seen.setdefault(desc.digest, desc)
    return list(seen.values())


# -- push ------------------------------------------------------------------------------------------


def _push_blobs(
    store: ImageStore,
    client: RegistryClient,
    repository: str,
    blobs: list[Descriptor],
    progress: TransferProgress,
    cancel: threading.Event | None,
) -> None:
    def one(desc: Descriptor, cancel: threading.Event) -> None:
        digest = desc.digest
        if not store.has_blob(digest):
            raise ImageError(
                f"blob {digest} of the image is missing from the local store {store.root}"
            )
        progress.start(digest, blob_label(desc), desc.size)
        if client.blob_size(repository, digest) is not None:
            outcome = BlobOutcome.EXISTS
            progress.update(digest, desc.size)
        else:
            outcome = client.upload_blob(
                repository,
                digest,
                desc.size,
                lambda: store.open_blob(digest),
                mount_from=client.locations.repositories(client.registry, digest),
                on_progress=lambda done: progress.update(digest, done),
                cancel=cancel,
            )
        log.debug("%s %s: %s", repository, digest, outcome)
        progress.finish(digest, outcome)

    _run_all(client, one, blobs, cancel)
    client.locations.record(client.registry, repository, [d.digest for d in blobs])


def _push_manifest(
    store: ImageStore,
    client: RegistryClient,
    repository: str,
    desc: Descriptor,
    reference: str,
    progress: TransferProgress,
    cancel: threading.Event | None,
) -> str:
    data = store.read_blob(desc.digest)
    if desc.media_type in mediatypes.INDEX_TYPES:
        index = ImageIndex.model_validate_json(data)
        for child in index.manifests:
            if not store.has_blob(child.digest):
                raise ImageError(
                    f"index {desc.digest} names {child.digest}, which is not in the local store; "
                    "only complete indexes can be pushed"
                )
            _push_manifest(store, client, repository, child, child.digest, progress, cancel)
    else:
        blobs = _blobs(ImageManifest.model_validate_json(data))
        _push_blobs(store, client, repository, blobs, progress, cancel)
    return client.put_manifest(repository, reference, data, desc.media_type)


def push_target(store: ImageStore, local_ref: str, remote_ref: str | None = None) -> Reference:
    """Where :func:`push` sends ``local_ref``: ``remote_ref``, else the image's own reference,
    with ``UKEDGE_REGISTRY`` filling in a missing registry host."""
    image = store.resolve(local_ref)
    target = remote_reference(remote_ref or image.ref, action="push")
    if target.digest:
        raise UsageError(f"push to a tag, not a digest: {target}")
    return target


def push(
    store: ImageStore,
    local_ref: str,
    remote_ref: str | None = None,
    *,
    progress: TransferProgress | None = None,
    client: RegistryClient | None = None,
    options: ClientOptions | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Push a local image to a registry; returns the manifest digest.

    ``remote_ref`` defaults to ``local_ref``; either must name a registry host (or
    ``UKEDGE_REGISTRY`` be set). Blobs the registry already has are skipped, blobs known to be in
    another repository of the same registry are mounted, large blobs go in resumable chunks.
    Without ``client``, one is made from ``options`` for the target's registry. Setting
    ``cancel`` stops the transfers at their next chunk (RegistryError "cancelled").
    """
    image: StoredImage = store.resolve(local_ref)
    target = push_target(store, local_ref, remote_ref)
    progress = progress or NullProgress()
    with client_for(target, client, options) as c:
        digest = _push_manifest(
            store, c, target.repository, image.descriptor, target.reference, progress, cancel
        )
    log.info("pushed %s as %s (%s)", image.ref, target, digest)
    return digest


# -- pull ------------------------------------------------------------------------------------------


def select_platform(index: ImageIndex, platform: str | Platform = DEFAULT_PLATFORM) -> Descriptor:
    """The manifest of ``index`` for ``platform`` (``linux/amd64``), as OCI matches platforms."""
    wanted = parse_platform(platform) if isinstance(platform, str) else platform
    for child in index.manifests:
        if child.platform is not None and child.platform.matches(wanted):
            return child
    offered = sorted(str(c.platform) for c in index.manifests if c.platform is not None)
    raise RegistryError(
        f"the index has no {wanted} manifest (it has: {', '.join(offered) or 'none'})"
    )


def _platform_of(platform: str | Platform | None) -> Platform:
    if platform is None:
        return host_platform()
    return parse_platform(platform) if isinstance(platform, str) else platform


def _resolve_manifest(
    client: RegistryClient, ref: Reference, platform: Platform
) -> tuple[RemoteManifest, RemoteManifest]:
    """What ``ref`` names (a manifest, or an index) and the manifest of ``platform`` in it (the
    same one for a single-platform image): an index costs one more small request, no blob."""
    top = client.get_manifest(ref.repository, ref.reference)
    if top.media_type not in mediatypes.INDEX_TYPES:
        return top, top
    child = select_platform(_parse_index(top.data, ref), platform)
    remote = client.get_manifest(ref.repository, child.digest)
    if remote.media_type in mediatypes.INDEX_TYPES:
        raise RegistryError(f"{ref}: the {platform} entry of the index is itself an index")
    return top, remote


def _parse_index(data: bytes, where: object) -> ImageIndex:
    try:
        return ImageIndex.model_validate_json(data)
    except ValueError as exc:
        raise RegistryError(f"{where}: the index does not parse: {exc}") from exc


def _local_platform(
    store: ImageStore, data: bytes, media_type: str, platform: Platform
) -> tuple[bytes, str] | None:
    """The stored manifest (bytes, media type) of ``platform`` that the document ``data``
    names, when it and all its blobs are here; None when anything is missing."""
    if media_type in mediatypes.INDEX_TYPES:
        try:
            child = select_platform(ImageIndex.model_validate_json(data), platform)
        except (ValueError, RegistryError):
            return None
        if not store.has_blob(child.digest):
            return None
        data, media_type = store.read_blob(child.digest), child.media_type
    if media_type not in (mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST):
        return None
    try:
        manifest = ImageManifest.model_validate_json(data)
    except ValueError:
        return None
    if not all(store.has_blob(d.digest) for d in _blobs(manifest)):
        return None
    return data, media_type


def _complete_locally(
    store: ImageStore, target: Reference, progress: TransferProgress, platform: Platform
) -> StoredImage | None:
    """A digest-pinned image the store already holds whole (for an index: its ``platform``)
    needs no registry (an edge node that lost its uplink can still start what it has); it is
    only tagged."""
    if target.digest is None or not store.has_blob(target.digest):
        return None
    data = store.read_blob(target.digest)
    try:
        media_type = str(json.loads(data).get("mediaType") or "")
    except (ValueError, AttributeError):
        return None
    with store.lease():
        found = _local_platform(store, data, media_type, platform)
        if found is None:
            return None
        index = media_type in mediatypes.INDEX_TYPES
        store.add_manifest(data, str(target), media_type, partial=index)
    for desc in _blobs(ImageManifest.model_validate_json(found[0])):
        progress.start(desc.digest, blob_label(desc), desc.size)
        progress.update(desc.digest, desc.size)
        progress.finish(desc.digest, BlobOutcome.CACHED)
    log.info("%s is in the store already; tagged without asking the registry", target)
    return store.resolve(str(target))


def pull(
    store: ImageStore,
    ref: str,
    *,
    progress: TransferProgress | None = None,
    client: RegistryClient | None = None,
    options: ClientOptions | None = None,
    platform: str | Platform | None = None,
    cancel: threading.Event | None = None,
) -> StoredImage:
    """Pull an image into ``store`` and tag it with its full reference (``host/repo:tag``).

    Only blobs the store lacks are fetched; each is verified against its digest before it is
    kept. A multi-platform image (an index) is stored as the index with only its ``platform``
    manifest (default: this host's) and that manifest's blobs: a node moves its own platform
    alone; pulling another platform later adds that one. A digest-pinned reference whose image
    the store holds whole is served from the store alone. Setting ``cancel`` stops the
    downloads at their next piece; nothing of the image is tagged then.
    """
    target = remote_reference(ref, action="pull")
    wanted = _platform_of(platform)
    progress = progress or NullProgress()
    local = _complete_locally(store, target, progress, wanted)
    if local is not None:
        return local
    with client_for(target, client, options) as c:
        top, remote = _resolve_manifest(c, target, wanted)
        try:
            manifest = ImageManifest.model_validate_json(remote.data)
        except ValueError as exc:
            raise RegistryError(
                f"{target}: the registry sent a manifest that does not parse: {exc}"
            ) from exc
        blobs = _blobs(manifest)

        def one(desc: Descriptor, cancel: threading.Event) -> None:
            progress.start(desc.digest, blob_label(desc), desc.size)
            if store.has_blob(desc.digest):
                progress.update(desc.digest, desc.size)
                progress.finish(desc.digest, BlobOutcome.CACHED)
                return
            c.download_blob(
                target.repository,
                desc,
                store,
                lambda done: progress.update(desc.digest, done),
                cancel=cancel,
            )
            progress.finish(desc.digest, BlobOutcome.DOWNLOADED)

        with store.lease():
            _run_all(c, one, blobs, cancel)
            if top is remote:
                store.add_manifest(remote.data, str(target), remote.media_type)
            else:
                store.add_manifest(remote.data, None, remote.media_type)
                store.add_manifest(top.data, str(target), top.media_type, partial=True)
        c.locations.record(c.registry, target.repository, [d.digest for d in blobs])
    log.info("pulled %s (%s, %s %s)", target, top.digest, wanted, remote.digest)
    return store.resolve(str(target))
