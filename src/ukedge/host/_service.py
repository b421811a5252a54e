"""One node's operations behind one interface, wherever the node is.

The CLI talks to a :class:`NodeService` and does not know whether it is the in-process
:class:`~ukedge.host.LocalNode` (daemonless, like podman) or an :class:`~ukedge.host.AgentClient`
speaking to a host agent over REST (``--host``, the Docker-context idiom). The agent serves a
``LocalNode``; so both paths run the same code and print the same output.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ukedge.host._models import (
    ImageSummary,
    Instance,
    InstanceEvent,
    InstanceStats,
    NodeInfo,
    PruneReport,
    RunRequest,
)

if TYPE_CHECKING:
    from ukedge.registry import TransferProgress

__all__ = ["NodeService", "OutputStream"]

OutputStream = Literal["console", "results"]


class NodeService(Protocol):
    """Instances and images of one node. Keys are instance names, ids or unique id prefixes."""

    def info(self) -> NodeInfo:
        """Capacity, accelerator and cache figures of the node."""

    # -- instances -------------------------------------------------------------------------------

    def run(self, request: RunRequest) -> Instance:
        """Create an instance and start it (an on-demand one only starts listening).

        Raises ``AdmissionError`` when the node has no room, ``UsageError`` for bad input.
        """

    def start(self, key: str) -> Instance:
        """Start an ended (or created) instance again, in its own directory, logs continued."""

    def list(self, *, all_instances: bool = False) -> list[Instance]:
        """Active instances, newest first; ended ones too with ``all_instances``."""

    def get(self, key: str) -> Instance: ...

    def wait(self, key: str, timeout: float | None = None) -> Instance:
        """Block until the instance has ended (or ``timeout``); returns its record."""

    def stop(self, key: str, timeout: float = 10.0) -> Instance:
        """SIGTERM to the app, kill after ``timeout``; the restart policy does not apply."""

    def kill(self, key: str) -> Instance: ...

    def remove(self, key: str, *, force: bool = False) -> Instance: ...

    def stats(self, key: str) -> InstanceStats: ...

    def follow(
        self,
        key: str,
        stream: OutputStream = "console",
        *,
        follow: bool = True,
        offset: int = 0,
    ) -> Iterator[bytes]:
        """Console (or results) bytes from ``offset``; with ``follow``, until the instance ends."""

    def prewarm(self, request: RunRequest) -> str:
        """Boot until healthy and keep a snapshot later runs resume from; returns where."""

    def events(self, *, stop: threading.Event | None = None) -> Iterator[InstanceEvent]:
        """State changes from now on, until ``stop`` is set (or the caller stops iterating)."""

    # -- images ----------------------------------------------------------------------------------

    def images(self) -> builtins.list[ImageSummary]: ...

    def inspect_image(self, ref: str, platform: str | None = None) -> dict[str, Any]:
        """``{"ref", "digest", "manifest", "config"}`` of a stored image; of a multi-platform
        one, those of ``platform`` (default: the node's) with ``index`` and ``platforms``."""

    def pull(self, ref: str, *, progress: TransferProgress | None = None) -> ImageSummary:
        """Fetch only the blobs the node lacks, verify each, then apply the cache budget."""

    def remove_image(self, ref: str, *, force: bool = False) -> builtins.list[str]:
        """Untag (and, when nothing else refers to it, delete) an image; returns what went.

        An image an instance uses is refused unless ``force``.
        """

    def prune_images(self) -> PruneReport:
        """Remove every image no instance uses."""
