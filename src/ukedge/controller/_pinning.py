"""Pinning a deployment's image to a digest when a revision is made.

A revision names its image by digest, so every node of a rollout runs the same bytes however
the tag moves afterwards (and a node that lost its uplink can start it from its cache). The
manifest is fetched once here: its digest is the pin, its layer digests and sizes let the
scheduler prefer nodes that already cache most of the bytes, and its config gives the memory
and vCPUs a spec leaves out, and its platform the nodes it may go to.

A multi-platform image (an OCI index) is pinned by the index's digest, and every node is given
that one digest; each node picks its own platform's manifest from it (the agent's
``--platform``), as ``ukedge pull`` does. Why the index and not each node's manifest digest: a
revision stays one pinned reference (what users see, sign and roll back to), the desired state
needs no per-node rewriting, a node keeps the index it pinned so it can start it offline, and
the node is the authority on what it runs; the scheduler only sends a node an image whose
index lists the node's platform, so the choice always exists. The layers are those of every
platform the deployment may run on (a node caches only its own, so the cached-bytes score
still counts the right ones); memory and vCPUs come from the first of them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from ukedge.controller._platforms import platform_of, require_platform
from ukedge.errors import ControllerError, RegistryError, UsageError
from ukedge.image import ImageConfig, ImageIndex, ImageManifest, Platform, mediatypes
from ukedge.registry import RegistryClient, remote_reference

__all__ = ["PinnedImage", "pin_image"]

log = logging.getLogger(__name__)

_INDEX_TYPES = frozenset({mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST})
_DEFAULT_MEMORY = int(ImageConfig.model_fields["memory_mib"].default)
_DEFAULT_VCPUS = int(ImageConfig.model_fields["vcpus"].default)


@dataclass(frozen=True)
class PinnedImage:
    reference: str  # registry/repository@sha256:...
    layers: dict[str, int] = field(default_factory=dict)
    memory_mib: int = _DEFAULT_MEMORY
    vcpus: int = _DEFAULT_VCPUS
    #: The platforms the image offers (``linux/amd64``); empty: not known (any node).
    platforms: tuple[str, ...] = ()


def _config_platform(data: bytes) -> str | None:
    """The platform an image config names (``linux/arm64``), or None (not a ukedge config)."""
    try:
        return str(ImageConfig.from_json(data).platform)
    except ValueError:
        return None


def _wanted(entries: list[tuple[str, Platform]], nodes: list[Platform]) -> list[str]:
    """The digests of the entries the deployment may run (all when it names no architecture)."""
    if not nodes:
        return [digest for digest, _ in entries]
    return [d for d, p in entries if any(p.matches(node) for node in nodes)]


def _config_figures(data: bytes) -> tuple[int, int]:
    try:
        doc = json.loads(data)
    except ValueError:
        return _DEFAULT_MEMORY, _DEFAULT_VCPUS
    if not isinstance(doc, dict):
        return _DEFAULT_MEMORY, _DEFAULT_VCPUS
    memory, vcpus = doc.get("memory_mib"), doc.get("vcpus")
    return (
        memory if isinstance(memory, int) and memory >= 16 else _DEFAULT_MEMORY,
        vcpus if isinstance(vcpus, int) and vcpus >= 1 else _DEFAULT_VCPUS,
    )


def pin_image(image: str, architectures: list[str] | None = None) -> PinnedImage:
    """Resolve ``image`` (a reference on a registry) to its digest, layers and figures.

    An image already pinned by digest whose registry cannot be reached is taken as it is,
    without layers (no cached-bytes score) and with the default figures.

    Raises :class:`ControllerError` (502) naming the image when the registry cannot be asked
    or has no such image; nothing is stored then.
    """
    try:
        ref = remote_reference(image, action="deploy")
    except UsageError as exc:
        raise ControllerError(f"image: {exc}", status=422) from exc
    assert ref.registry is not None
    try:
        nodes = [require_platform(a, "architecture") for a in architectures or []]
    except ValueError as exc:
        raise ControllerError(f"placement.architectures: {exc}", status=422) from exc
    platforms: tuple[str, ...] = ()
    layers: dict[str, int] = {}
    try:
        with RegistryClient(ref.registry, timeout=30, retries=1) as client:
            top = client.get_manifest(ref.repository, ref.reference)
            children = [top.digest]
            if top.media_type in _INDEX_TYPES:
                index = ImageIndex.model_validate_json(top.data)
                entries = [(m.digest, m.platform) for m in index.manifests if m.platform]
                platforms = tuple(str(p) for _, p in entries)
                children = _wanted(entries, nodes)
                if not children:
                    raise ControllerError(
                        f"image {image} offers {', '.join(platforms) or 'no platform'}; "
                        f"placement.architectures asks for {', '.join(architectures or [])}",
                        status=422,
                    )
            config = b""
            for digest in children:
                manifest = (
                    top if digest == top.digest else client.get_manifest(ref.repository, digest)
                )
                parsed = ImageManifest.model_validate_json(manifest.data)
                layers.update({layer.digest: layer.size for layer in parsed.layers})
                if not config:
                    config = client.fetch_blob(ref.repository, parsed.config.digest)
            if not platforms and (own := _config_platform(config)) is not None:
                platforms = (own,)
                image_platform = platform_of(own)
                if nodes and (image_platform is None or not _wanted([("", image_platform)], nodes)):
                    raise ControllerError(
                        f"image {image} is {own} only; placement.architectures asks for "
                        f"{', '.join(architectures or [])} (build it for those: --platform)",
                        status=422,
                    )
    except RegistryError as exc:
        if ref.digest is not None and exc.status is None:
            # Pinned already and the registry unreachable: the nodes may have it cached (or
            # reach a registry the controller cannot); layers and figures stay unknown.
            log.warning("cannot read %s from its registry (%s); deploying it unread", image, exc)
            return PinnedImage(reference=f"{ref.name}@{ref.digest}")
        raise ControllerError(
            f"cannot pin image {image}: {exc} (push it first, or check the reference)",
            status=502,
        ) from exc
    except ValueError as exc:
        raise ControllerError(f"image {image}: not an image manifest: {exc}", status=502) from exc
    memory, vcpus = _config_figures(config)
    return PinnedImage(
        reference=f"{ref.name}@{top.digest}",
        layers=layers,
        memory_mib=memory,
        vcpus=vcpus,
        platforms=platforms,
    )
