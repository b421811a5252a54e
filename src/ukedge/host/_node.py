"""The node in this process: the instance manager and the image cache behind :class:`NodeService`.

``ukedge run`` without ``--host`` uses a ``LocalNode`` directly (daemonless); the host agent
serves one over REST. Whatever both need beyond the manager lives here, once: resolving a short
image reference against the node's hub and pulling an image that is missing before a run (as
``docker run`` does), keeping the cache's LRU order, and the node's capacity figures.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import platform
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ukedge import __version__
from ukedge.errors import ImageError, InstanceError, UkedgeError, UsageError
from ukedge.host._events import EventBus
from ukedge.host._models import (
    ImageSummary,
    Instance,
    InstanceEvent,
    InstanceState,
    InstanceStats,
    NodeInfo,
    PruneReport,
    RunRequest,
)
from ukedge.host._service import OutputStream
from ukedge.host.images import ImageCache
from ukedge.host.instances import InstanceManager
from ukedge.image import Platform, parse_platform, parse_reference

if TYPE_CHECKING:
    from ukedge.host.ondemand import OnDemandController
    from ukedge.registry import TransferProgress

__all__ = ["LocalNode"]


def _memory_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


class LocalNode:
    """A :class:`~ukedge.host.NodeService` over this process's manager and image cache."""

    def __init__(
        self,
        manager: InstanceManager,
        images: ImageCache,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        hub: str | None = None,
    ) -> None:
        self.manager = manager
        self.cache = images
        self.name = name or platform.node() or "localhost"
        self.labels = dict(labels or {})
        #: Registry (HOST[:PORT]) for image references that name none.
        self.hub = hub.removeprefix("http://").removeprefix("https://").rstrip("/") if hub else None
        self.bus = EventBus()
        #: Listens for on-demand instances; only a long-running process (the agent) has one.
        self.on_demand: OnDemandController | None = None
        manager.listeners.append(self._on_event)

    def _on_event(self, event: InstanceEvent) -> None:
        if event.action in ("start", "restart"):
            instance = self.manager.records.find(event.id)
            self.cache.touch(instance.image_digest)
        self.bus.publish(event)

    def close(self) -> None:
        if self._on_event in self.manager.listeners:
            self.manager.listeners.remove(self._on_event)

    # -- node --------------------------------------------------------------------------------------

    def info(self) -> NodeInfo:
        from ukedge.vmm import probe_accelerator, qemu_version

        verdict = probe_accelerator()
        instances = self.manager.list(all_instances=True)
        capacity = self.manager.capacity
        committed = self.manager.committed()
        images = self.cache.images()
        return NodeInfo(
            name=self.name,
            labels=self.labels,
            version=__version__,
            architecture=self.manager.platform.machine,
            cpus=os.cpu_count() or 1,
            memory_total_bytes=_memory_total(),
            memory_allocatable_bytes=(
                capacity.memory_allocatable_bytes if capacity else _memory_total()
            ),
            memory_committed_bytes=committed.memory_bytes,
            vcpus_committed=committed.vcpus,
            overcommit_ratio=capacity.overcommit_ratio if capacity else 1.0,
            accelerator=verdict.accel,
            accelerator_detail=verdict.reason,
            qemu_version=verdict.qemu_version or qemu_version(),
            images=len(images),
            image_bytes=self.cache.usage_bytes(),
            image_budget_bytes=self.cache.budget,
            instances=len(instances),
            instances_running=sum(1 for i in instances if i.state is InstanceState.RUNNING),
        )

    # -- instances ---------------------------------------------------------------------------------

    def _qualified(self, ref: str) -> str:
        """``ref`` on the node's hub when it names no registry (and the node has a hub)."""
        if self.hub and parse_reference(ref).registry is None:
            return f"{self.hub}/{ref}"
        return ref

    def _here(self, ref: str, platform: Platform | None) -> bool:
        """Whether the store can run ``ref`` as it is (for a multi-platform image: whether it
        holds ``platform``'s manifest, else the node's)."""
        image = self.cache.store.resolve(ref)
        if image.is_index:
            try:
                self.cache.store.platform_image(image, platform or self.manager.platform)
            except ImageError:
                return False
        return True

    def _local_or_pull(self, ref: str, platform: Platform | None = None) -> str:
        """The reference to run: the stored image, else pulled from its registry first (a
        multi-platform image the node holds without the platform to run: that platform)."""
        try:
            if self._here(ref, platform):
                return ref
            qualified = self._qualified(ref)
            if parse_reference(qualified).registry is None:
                return ref  # nothing to pull from: running it says which platform is missing
        except ImageError:
            qualified = self._qualified(ref)
            if parse_reference(qualified).registry is None:
                raise
        try:
            if self._here(qualified, platform):
                return qualified
        except ImageError:
            pass
        self.cache.pull(qualified, platform=platform)
        return qualified

    def run(self, request: RunRequest) -> Instance:
        if request.on_demand and self.on_demand is None:
            raise UsageError(
                "on-demand instances need a host agent to listen for them: start one with "
                "`ukedge host serve` and pass --host (or set UKEDGE_HOST)"
            )
        pins = [request.image]
        with contextlib.suppress(UkedgeError):  # a bad reference fails below, with its message
            pins.append(self._qualified(request.image))
        with self.cache.pinned(*pins):  # until the instance records its image
            ref = self._local_or_pull(request.image, request.platform)
            if ref != request.image:
                request = request.model_copy(update={"image": ref})
            instance = self.manager.run(request)
        if instance.on_demand and self.on_demand is not None:
            try:
                self.on_demand.sync()  # listening before the caller hears of the instance
            except InstanceError:
                self.manager.remove(instance.id, force=True)
                raise
        return instance

    def start(self, key: str) -> Instance:
        return self.manager.start(key)

    def list(self, *, all_instances: bool = False) -> builtins.list[Instance]:
        return self.manager.list(all_instances=all_instances)

    def get(self, key: str) -> Instance:
        return self.manager.get(key)

    def wait(self, key: str, timeout: float | None = None) -> Instance:
        return self.manager.wait(key, timeout)

    def stop(self, key: str, timeout: float = 10.0) -> Instance:
        return self.manager.stop(key, timeout)

    def kill(self, key: str) -> Instance:
        return self.manager.kill(key)

    def remove(self, key: str, *, force: bool = False) -> Instance:
        return self.manager.remove(key, force=force)

    def stats(self, key: str) -> InstanceStats:
        return self.manager.stats(key)

    def follow(
        self,
        key: str,
        stream: OutputStream = "console",
        *,
        follow: bool = True,
        offset: int = 0,
    ) -> Iterator[bytes]:
        return self.manager.follow(key, stream, follow=follow, offset=offset)

    def prewarm(self, request: RunRequest) -> str:
        ref = self._local_or_pull(request.image, request.platform)
        return str(self.manager.prewarm(request.model_copy(update={"image": ref})))

    def events(self, *, stop: threading.Event | None = None) -> Iterator[InstanceEvent]:
        """Every change after the call, made by any process on this node (the journal's
        position is taken before this returns)."""
        return self.manager.journal.follow(stop)

    # -- images ------------------------------------------------------------------------------------

    def images(self) -> builtins.list[ImageSummary]:
        return self.cache.images()

    def inspect_image(self, ref: str, platform: str | None = None) -> dict[str, Any]:
        return self.cache.inspect(ref, parse_platform(platform) if platform else None)

    def pull(self, ref: str, *, progress: TransferProgress | None = None) -> ImageSummary:
        return self.cache.pull(self._qualified(ref), progress=progress)

    def remove_image(self, ref: str, *, force: bool = False) -> builtins.list[str]:
        return self.cache.remove(ref, force=force)

    def prune_images(self) -> PruneReport:
        return self.cache.prune()
