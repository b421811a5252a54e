"""The node's image cache: the one content-addressed store every instance boots from, under a
size budget.

A pull fetches only the blobs the store lacks and verifies each (``ukedge.registry.pull``);
afterwards, if the store is over its budget, images are evicted least recently used first until
it fits. An image some instance refers to (in any state: an exited instance may be started
again) is never evicted or pruned, and neither is the image just pulled; when those alone exceed
the budget the cache stays over it and says so in the log.

What an eviction frees is measured, not predicted: layers are shared between images (the kernel,
a runtime), so the cache removes one image, sweeps the blobs nothing else references, and reads
the store's real usage again before deciding whether to remove the next.

Recency is the later of the last start of an instance (:meth:`ImageCache.touch`) and the last
pull; an image that was neither pulled through the cache nor used counts from when the store
received its manifest. A pull thus counts as a use: an image pulled ahead of a deployment is
not the first to go. The times live in a small SQLite table beside the store, so the order
survives restarts and the agent and a local CLI can share the store.

Long on purpose: pull, use, eviction and removal all decide under the same pins and usage
table; the usage table itself and the unpacked layers are modules of their own.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import fcntl
import logging
import os
import re
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ukedge.errors import ImageError, ImageInUseError, SignatureError, UsageError
from ukedge.host._models import ImageSummary, PruneReport
from ukedge.host.images._layers import UnpackedLayers
from ukedge.host.images._usage import ImageUsage, UsageRecord
from ukedge.image import (
    ImageManifest,
    ImageStore,
    Platform,
    StoredImage,
    host_platform,
    mediatypes,
    parse_reference,
)
from ukedge.registry import TransferProgress

if TYPE_CHECKING:
    from ukedge.host.policy import SignatureGate
    from ukedge.registry import ClientOptions, RegistryClient
from ukedge.units import format_size, parse_size

__all__ = ["BUDGET_ENV", "ImageCache", "budget_from_env", "image_summary"]

log = logging.getLogger(__name__)

#: The local CLI's cache budget (``2G``, ``500M``); unset or empty: no budget.
BUDGET_ENV = "UKEDGE_IMAGE_BUDGET"
_USAGE_DB = ".ukedge-usage.db"
_LOCK = ".cache.lock"
_MANIFEST_TYPES = frozenset({mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST})
#: An unpacked layer, or what is derived from one (``.erofs``, ``.<key>.boot``, ``.<key>.mounts``).
_UNPACKED_NAME = re.compile(r"^([0-9a-f]{64})(\.[0-9a-z.]+)?\Z")


def budget_from_env(environ: dict[str, str] | None = None) -> int | None:
    """The budget ``UKEDGE_IMAGE_BUDGET`` names, in bytes; None when it is unset or empty."""
    text = (os.environ if environ is None else environ).get(BUDGET_ENV, "").strip()
    if not text:
        return None
    try:
        return parse_size(text)
    except UsageError as exc:
        raise UsageError(f"{BUDGET_ENV}: {exc}") from None


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def image_summary(
    store: ImageStore,
    image: StoredImage,
    *,
    last_used: float | None = None,
    in_use: bool = False,
) -> ImageSummary:
    """One row of ``ukedge images``.

    An image that is not a ukedge image (an OCI container image pulled by mistake, a tagged
    index) is still listed, with what can be said about it, so that it can be seen and removed.
    """
    ref = parse_reference(image.ref)
    created: str | None = None
    runtime = ""
    size = image.descriptor.size
    layers: list[int] = []
    platforms: list[str] = []
    shown = image
    if image.is_index:
        # A multi-platform image: the platforms whose manifests are here, and the first of
        # them (the host's when it is here) describes the image.
        held = [child for child, present in store.entries(image) if present]
        platforms = [str(child.platform) for child in held if child.platform]
        size = store.stored_size(image)
        mine = [c for c in held if c.platform and c.platform.matches(host_platform())]
        first = (mine or held)[:1]
        shown = StoredImage(image.ref, first[0]) if first else image
    if shown.descriptor.media_type in _MANIFEST_TYPES:
        manifest = ImageManifest.model_validate_json(store.read_blob(shown.digest))
        if not image.is_index:
            size = store.image_size(manifest)
        layers = [layer.size for layer in manifest.layers]
        try:
            config = store.config(manifest)
        except ImageError:
            runtime = "(not ukedge)"
        else:
            created, runtime = config.created, config.runtime
            if not image.is_index:
                platforms = [str(config.platform)]
    else:
        runtime = "(index)"
    if not created:
        created = _iso(store.blob_path(image.digest).stat().st_mtime)
    return ImageSummary(
        ref=image.ref,
        repository=ref.name,
        tag=ref.tag,
        id=image.id,
        digest=image.digest,
        created=created,
        size=size,
        runtime=runtime,
        layers=layers,
        last_used=last_used,
        in_use=in_use,
        platforms=platforms,
    )


class ImageCache:
    """The store of one node, with LRU eviction under ``budget`` bytes (None: unlimited).

    ``in_use`` returns the manifest digest of every existing instance, one entry per instance
    (the agent computes it from the instance manager's records); those images are kept. A set
    works too, but then a refusal can only say "used by 1 instance".

    Removing blobs also deletes their unpacked copies; with ``own_layers`` (the unpacked
    directory serves this store alone, as in an agent's data directory) ``prune`` also deletes
    copies whose blob went some other way. Without it, copies are left alone: ``UKEDGE_CACHE``
    may share one unpacked directory between several stores.
    """

    def __init__(
        self,
        store: ImageStore,
        layers: UnpackedLayers,
        budget: int | None = None,
        in_use: Callable[[], Iterable[str]] | None = None,
        *,
        usage_path: Path | None = None,
        own_layers: bool = False,
        on_remove: Callable[[Collection[str]], object] | None = None,
    ) -> None:
        if budget is not None and budget < 0:
            raise UsageError(f"invalid image cache budget {budget}: it must be 0 or more bytes")
        self.store = store
        self.layers = layers
        self.budget = budget
        self.in_use: Callable[[], Iterable[str]] = in_use or (lambda: ())
        self.usage = ImageUsage(usage_path or store.root / _USAGE_DB)
        #: The unpacked-layer directory belongs to this store alone (an agent's data directory),
        #: so prune may delete every entry whose blob the store no longer holds, including
        #: those left by removals made without the cache.
        self.own_layers = own_layers
        #: Told the digests of blobs (manifests among them) that removals deleted, for data
        #: derived from them elsewhere (the instance manager's prewarm snapshots).
        self.on_remove = on_remove
        #: The node's signature policy, when it has one: told of every pull.
        self.gate: SignatureGate | None = None
        #: The platform a pull of a multi-platform image fetches unless asked for another
        #: (the node's: the agent's ``--platform``, default the host's).
        self.platform: Platform = host_platform()
        self._thread_lock = threading.Lock()
        self._pins: collections.Counter[str] = collections.Counter()
        self._pins_lock = threading.Lock()

    def close(self) -> None:
        """Close the usage table (also done when the cache is garbage-collected)."""
        self.usage.close()

    # -- reading -----------------------------------------------------------------------------------

    def _users(self) -> collections.Counter[str]:
        """Instances per image digest; a multi-platform image's tag counts those of every
        platform manifest it holds (instances record the manifest they booted)."""
        users = collections.Counter(self.in_use())
        for image in self.store.images():
            if image.is_index and image.digest not in users:
                with contextlib.suppress(ImageError, FileNotFoundError, ValueError):
                    count = sum(users[c.digest] for c, here in self.store.entries(image) if here)
                    if count:
                        users[image.digest] = count
        return users

    def images(self) -> list[ImageSummary]:
        """Every tag of the store, sorted by reference, with its last use and whether it is used."""
        users = self._users()
        usage = self.usage.all()
        rows = []
        for image in self.store.images():
            record = usage.get(image.digest)
            try:
                rows.append(
                    image_summary(
                        self.store,
                        image,
                        last_used=record.last_used if record else None,
                        in_use=image.digest in users,
                    )
                )
            except (ImageError, FileNotFoundError):
                continue  # removed by another process while we listed
        return rows

    def summary(self, ref: str) -> ImageSummary:
        """The :meth:`images` row of one image."""
        image = self.store.resolve(ref)
        record = self.usage.all().get(image.digest)
        return image_summary(
            self.store,
            image,
            last_used=record.last_used if record else None,
            in_use=image.digest in self._users(),
        )

    def inspect(self, ref: str, platform: Platform | None = None) -> dict[str, Any]:
        """``{"ref", "digest", "size", "manifest", "config"}``, as ``ukedge image inspect``
        prints it; for a multi-platform image those of ``platform`` (default: the node's),
        with ``index`` (its digest) and ``platforms`` (each entry and whether it is here)."""
        top = self.store.resolve(ref)
        image, manifest = self.store.manifest(ref, platform or self.platform)
        found: dict[str, Any] = {
            "ref": image.ref,
            "digest": image.digest,
            "size": self.store.image_size(manifest),
            "manifest": manifest.model_dump(mode="json", by_alias=True, exclude_none=True),
            "config": self.store.config(manifest).model_dump(mode="json", exclude_none=True),
        }
        if top.is_index:
            found["index"] = top.digest
            found["platforms"] = [
                {"platform": str(child.platform), "digest": child.digest, "present": here}
                for child, here in self.store.entries(top)
            ]
        return found

    def usage_bytes(self) -> int:
        """Bytes of blobs on disk (shared layers once): what the budget is compared with."""
        return self.store.disk_usage()

    # -- pull and use ------------------------------------------------------------------------------

    def pull(
        self,
        ref: str,
        *,
        progress: TransferProgress | None = None,
        options: ClientOptions | None = None,
        platform: Platform | None = None,
        cancel: threading.Event | None = None,
        client: RegistryClient | None = None,
    ) -> ImageSummary:
        """Pull ``ref`` (only the missing blobs, each verified), then keep the cache in budget.

        Of a multi-platform image, ``platform``'s manifest (default: the node's) alone. The
        image just pulled is never evicted to make room for itself.
        """
        from ukedge import registry  # httpx and the transfer code load when a pull runs

        with registry.client_for(registry.remote_reference(ref), client, options) as c:
            stored = registry.pull(
                self.store,
                ref,
                progress=progress,
                client=c,
                platform=platform or self.platform,
                cancel=cancel,
            )
            if self.gate is not None:
                self._check_pulled(stored, c)
        self.usage.pulled(stored.digest)
        self._evict(keep={stored.digest})
        return self.summary(stored.ref)

    def _check_pulled(self, stored: StoredImage, client: RegistryClient) -> None:
        """Fetch the pulled image's signatures (over the pull's client) and apply the policy: a
        refused image is untagged again (unless an instance still uses it), so nothing of it
        can start."""
        assert self.gate is not None
        # A multi-platform image: the index (what a deployment pins and a create checks) and
        # the platform manifests held here (what an instance records, checked at each start).
        digests = [stored.digest]
        if stored.is_index:
            digests += [child.digest for child, here in self.store.entries(stored) if here]
        for digest in digests:
            self.gate.fetch(stored.ref, digest, client)
        try:
            for digest in digests:
                self.gate.enforce(stored.ref, digest)
        except SignatureError as exc:
            with contextlib.suppress(ImageInUseError, ImageError):
                self.remove(stored.ref)
            self.gate.refused_pull(exc)
            raise

    def touch(self, digest: str) -> None:
        """An instance started from the image ``digest``: it moves to the back of the LRU order."""
        self.usage.touch(digest)

    # -- removal -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def pinned(self, *refs: str) -> Iterator[None]:
        """Keep the images ``refs`` name (once they exist) from eviction meanwhile.

        A run pulls its image and only then records its instance; without a pin another
        thread's pull could evict the image in between. In-process only: the agent's REST
        calls are threads of one process.
        """
        with self._pins_lock:
            self._pins.update(refs)
        try:
            yield
        finally:
            with self._pins_lock:
                self._pins.subtract(refs)
                self._pins = +self._pins  # drop the zero counts

    def _pinned_digests(self) -> set[str]:
        with self._pins_lock:
            refs = list(self._pins)
        digests = set()
        for ref in refs:
            with contextlib.suppress(ImageError, UsageError):
                digests.add(self.store.resolve(ref).digest)
        return digests

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One removal at a time, across threads and processes (the agent and a local CLI), so
        two evictions do not both remove an image to free the same bytes."""
        with self._thread_lock, (self.store.root / _LOCK).open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _tags_by_digest(self) -> dict[str, list[str]]:
        tags: dict[str, list[str]] = collections.defaultdict(list)
        for image in self.store.images():
            tags[image.digest].append(image.ref)
        return tags

    def _drop(self, refs: Iterable[str]) -> dict[str, int]:
        """Untag ``refs``, sweep, and forget what went: unpacked layers and usage rows."""
        self.store.untag(refs)
        removed = self.store.collect()
        for digest in removed:
            # Derived data keyed by blob digest; only blobs this sweep removed, because the
            # unpacked directory may be shared with other stores (UKEDGE_CACHE).
            self.layers.forget(digest)
        if removed:
            self.usage.forget(removed)
            if self.on_remove is not None:
                self.on_remove(set(removed))
        return removed

    def _sweep_unpacked(self) -> None:
        for path in self.layers.root.iterdir():
            m = _UNPACKED_NAME.match(path.name)
            if m and not self.store.has_blob("sha256:" + m.group(1)):
                path.unlink(missing_ok=True)
                log.debug("deleted %s, derived from sha256:%s: its blob is gone", path.name, m[1])

    def remove(self, ref: str, *, force: bool = False) -> list[str]:
        """Untag an image and delete the blobs no other image needs.

        Returns Docker's report lines: ``Untagged: REF`` for each name removed, then
        ``Deleted: DIGEST`` for each blob deleted. By name, only that name goes (the image stays
        while it has another); by id or digest, every name of the image goes, which needs
        ``force`` when there are several. An image some instance uses is refused unless
        ``force`` (or it keeps another name).
        """
        with self._exclusive():
            image = self.store.resolve(ref)
            tags = self._tags_by_digest()[image.digest]
            by_name = _names(ref, image.ref)
            refs = [image.ref] if by_name else tags
            if not by_name and len(tags) > 1 and not force:
                raise ImageInUseError(
                    f"image {image.id} has {len(tags)} names ({', '.join(tags)}); remove them by "
                    "name, or all at once with --force"
                )
            if set(refs) >= set(tags) and not force:
                count = self._users()[image.digest]
                if count:
                    raise ImageInUseError(
                        f"image {image.ref} is used by {count} instance"
                        f"{'s' if count > 1 else ''} (any state); remove "
                        f"{'them' if count > 1 else 'it'} first (`ukedge rm`), or use --force"
                    )
            removed = self._drop(refs)
        lines = [f"Untagged: {r}" for r in refs] + [f"Deleted: {d}" for d in sorted(removed)]
        log.info("removed %s: %s blob(s), %s", image.ref, len(removed), _fmt(sum(removed.values())))
        return lines

    def prune(self) -> PruneReport:
        """Remove every image no instance uses (all its names and blobs), and their unpacked
        layers."""
        with self._exclusive():
            users = self._users()
            refs = [
                ref
                for digest, names in self._tags_by_digest().items()
                if digest not in users
                for ref in names
            ]
            removed = self._drop(refs) if refs else {}
            if self.own_layers:
                self._sweep_unpacked()
        report = PruneReport(removed=sorted(refs), reclaimed_bytes=sum(removed.values()))
        if refs:
            log.info("pruned %d image name(s), %s", len(refs), _fmt(report.reclaimed_bytes))
        return report

    def evict(self) -> PruneReport:
        """Remove the least recently used images no instance uses until the store fits its
        budget; nothing without a budget."""
        return self._evict(keep=set())

    def _recency(self, digest: str, record: UsageRecord | None) -> float:
        times = [t for t in (record.last_used, record.pulled_at) if t is not None] if record else []
        if times:
            return max(times)
        try:
            return self.store.blob_path(digest).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _evict(self, keep: set[str]) -> PruneReport:
        report = PruneReport()
        budget = self.budget
        if budget is None:
            return report
        with self._exclusive():
            used = self.store.disk_usage()
            if used <= budget:
                return report
            users = self._users()
            tags = self._tags_by_digest()
            usage = self.usage.all()
            spared = keep | self._pinned_digests()
            victims = sorted(
                (d for d in tags if d not in users and d not in spared),
                key=lambda d: (self._recency(d, usage.get(d)), d),
            )
            for digest in victims:
                if used <= budget:
                    break
                removed = self._drop(tags[digest])
                used = self.store.disk_usage()
                freed = sum(removed.values())
                report.removed.extend(tags[digest])
                report.reclaimed_bytes += freed
                record = usage.get(digest)
                log.info(
                    "evicted %s (last used %s): freed %s; the cache holds %s of its %s budget",
                    ", ".join(tags[digest]),
                    _iso(record.last_used) if record and record.last_used else "never",
                    _fmt(freed),
                    _fmt(used),
                    _fmt(budget),
                )
            if used > budget:
                log.warning(
                    "the image cache holds %s, over its budget of %s: the images left are used "
                    "by instances or were just pulled; remove instances to let them go",
                    _fmt(used),
                    _fmt(budget),
                )
        report.removed.sort()
        return report


def _names(given: str, resolved: str) -> bool:
    """Whether the user named the image by a reference (not by an id or digest)."""
    try:
        return str(parse_reference(given)) == resolved
    except UsageError:
        return False


def _fmt(n: int) -> str:
    return f"{format_size(n)} ({n} bytes)"
