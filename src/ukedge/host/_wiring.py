"""How a node is put together, once: the CLI's in-process node and the agent's are wired here.

A node is an instance manager (records, VM backend, unpacked layers, prewarm snapshots), an image
cache over the same store (whose "image in use" is every instance record's image, in any state)
and the :class:`LocalNode` that serves both. Without ``--host`` the CLI opens this user's node
(:meth:`NodeLayout.local`, ``ukedge.paths``); the agent opens its data directory
(:meth:`NodeLayout.data_dir`). Both go through :func:`open_node`, so a setting means the same in
both and a new part of a node is wired once.

The QEMU user setting reads the same everywhere: unset (``None``) is the default (``nobody`` when
this process is root, else QEMU runs as the caller), ``""`` keeps the caller's user (root: not
advised), any other value is a user name that must exist.
"""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from ukedge import paths, vmm
from ukedge.errors import UsageError
from ukedge.host._node import LocalNode
from ukedge.host.images import (
    ImageCache,
    UnpackedLayers,
    budget_from_env,
    shared_runtime_from_env,
)
from ukedge.host.instances import Capacity, InstanceManager
from ukedge.host.policy import Policy, SignatureGate
from ukedge.image import ImageStore, Platform

#: Names the QEMU binary for x86_64 guests (a build with only what they use: ``make qemu-slim``).
QEMU_ENV = "UKEDGE_QEMU"

__all__ = [
    "NodeLayout",
    "default_qemu_user",
    "open_image_cache",
    "open_local_node",
    "open_manager",
    "open_node",
    "qemu_from_env",
    "resolve_qemu_user",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeLayout:
    """Where one node keeps its state."""

    instances: Path
    store: Path
    unpacked: Path
    snapshots: Path
    #: The unpacked layers serve this store alone, so evicting an image may drop its layers.
    own_layers: bool

    @classmethod
    def local(cls) -> NodeLayout:
        """This user's node (``ukedge.paths``); the layer cache may be shared (``UKEDGE_CACHE``)."""
        cache = paths.cache_dir()
        return cls(
            paths.instances_dir(),
            paths.store_dir(),
            cache / "unpacked",
            cache / "snapshots",
            own_layers=False,
        )

    @classmethod
    def data_dir(cls, data: Path) -> NodeLayout:
        """An agent's node: everything under its data directory."""
        return cls(
            data / "instances",
            data / "store",
            data / "cache" / "unpacked",
            data / "cache" / "snapshots",
            own_layers=True,
        )


def default_qemu_user() -> str | None:
    """The user QEMU drops to: ``nobody`` when this process is root, else None (QEMU runs as
    the caller, who is unprivileged already)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        log.warning("running as root and there is no user 'nobody': QEMU keeps root")
        return None
    return "nobody"


def resolve_qemu_user(setting: str | None) -> str | None:
    """The user QEMU runs as for a setting (see the module docstring); None: the caller's."""
    if setting is None:
        return default_qemu_user()
    if setting:
        try:
            pwd.getpwnam(setting)
        except KeyError:
            raise UsageError(
                f"no such user {setting!r} for QEMU to run as (--qemu-user; an empty value "
                "keeps the caller's user)"
            ) from None
    return setting or None


def qemu_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The x86_64 QEMU binary ``UKEDGE_QEMU`` names (None: ``qemu-system-x86_64`` on PATH).

    A node setting, not a per-run one, like the shared runtime: the CLI's node and the agent's
    read it alike, so every instance and prewarm snapshot of a node comes from one build (a
    build of the same QEMU version and machine type: snapshots and moves carry over). Checked
    here, so that a wrong path fails the command that opens the node, naming the variable,
    rather than the first VM."""
    value = (os.environ if environ is None else environ).get(QEMU_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise UsageError(
            f"{QEMU_ENV}={value}: no executable file there (build one with `make qemu-slim`, or "
            "unset it to use qemu-system-x86_64 from PATH)"
        )
    return str(path.absolute())


def open_manager(
    layout: NodeLayout | None = None,
    *,
    backend: str = "qemu",
    qemu_user: str | None = None,
    capacity: Capacity | None = None,
) -> InstanceManager:
    """The instance manager of ``layout`` (default: this user's node)."""
    layout = layout or NodeLayout.local()
    user = resolve_qemu_user(qemu_user)
    config: dict[str, object] = {"run_as": user} if backend == "qemu" and user is not None else {}
    binary = qemu_from_env() if backend == "qemu" else None
    if binary is not None:
        config["binary"] = binary
    # The runtime boot path is a node setting (UKEDGE_SHARED_RUNTIME): every instance and
    # prewarm snapshot of the node boots the same way, and a move needs the same on both ends.
    bus = shared_runtime_from_env()
    if bus is not None and backend == "qemu":
        config["disk_bus"] = bus
    return InstanceManager(
        layout.instances,
        ImageStore(layout.store),
        vmm.create(backend, config),
        UnpackedLayers(layout.unpacked, shared_runtime=bus is not None),
        layout.snapshots,
        capacity=capacity,
    )


def open_image_cache(
    manager: InstanceManager | None = None,
    *,
    budget: int | None = None,
    own_layers: bool = False,
) -> ImageCache:
    """The image cache over ``manager``'s store and layers (default: this user's node, with the
    budget ``UKEDGE_IMAGE_BUDGET`` names). Every instance record's image is in use."""
    if manager is None:
        manager = open_manager()
        budget = budget_from_env() if budget is None else budget
    records = manager.records
    cache = ImageCache(
        manager.store,
        manager.layers,
        budget,
        # One digest per instance, so a refusal can say how many instances use an image.
        lambda: [instance.image_digest for instance in records.all()],
        own_layers=own_layers,
        on_remove=manager.drop_snapshots,
    )
    cache.platform = manager.platform
    return cache


def open_node(
    layout: NodeLayout,
    *,
    qemu_user: str | None = None,
    capacity: Capacity | None = None,
    budget: int | None = None,
    hub: str | None = None,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    policy: Policy | None = None,
    platform: Platform | None = None,
) -> LocalNode:
    """A node over ``layout``: its manager, its image cache, and the service over both; with
    ``policy``, its signature gate at every pull and start; with ``platform``, a node of that
    platform (it pulls and boots that manifest of multi-platform images)."""
    manager = open_manager(layout, qemu_user=qemu_user, capacity=capacity)
    if platform is not None:
        manager.platform = platform
    images = open_image_cache(manager, budget=budget, own_layers=layout.own_layers)
    if policy is not None:
        gate = SignatureGate(policy, manager.store.root)
        images.gate = gate
        manager.image_check = gate.check
        gate.on_refused = manager.announce
        drop_snapshots = manager.drop_snapshots

        def removed(digests: Collection[str]) -> None:
            drop_snapshots(digests)
            gate.forget(set(digests))

        images.on_remove = removed
    return LocalNode(manager, images, name=name, labels=labels, hub=hub)


def open_local_node() -> LocalNode:
    """This user's node, as the CLI uses it without ``--host``: the image budget from
    ``UKEDGE_IMAGE_BUDGET``, short image names against ``UKEDGE_REGISTRY`` when set."""
    from ukedge.registry import default_registry

    node = open_node(NodeLayout.local(), budget=budget_from_env(), hub=default_registry())
    node.manager.checks_health = False  # no supervisor outlives the command
    return node
