"""Pinning a deployment's image to a digest when a revision is made.

A revision names its image by digest, so every node of a rollout runs the same bytes however
the tag moves afterwards (and a node that lost its uplink can start it from its cache). The
manifest is fetched once here: its digest is the pin, its layer digests and sizes let the
scheduler prefer nodes that already cache most of the bytes, and its config gives the memory
and vCPUs a spec leaves out. For a multi-platform index the pin is the index (each node pulls
its own platform) and the layers and config are those of the first platform the deployment
may run on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from ukedge.errors import ControllerError, RegistryError, UsageError
from ukedge.image import ImageConfig, ImageIndex, ImageManifest, mediatypes
from ukedge.registry import RegistryClient, remote_reference, select_platform

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
        with RegistryClient(ref.registry, timeout=30, retries=1) as client:
            top = client.get_manifest(ref.repository, ref.reference)
            manifest = top
            if top.media_type in _INDEX_TYPES:
                platform = f"linux/{(architectures or ['amd64'])[0]}"
                child = select_platform(ImageIndex.model_validate_json(top.data), platform)
                manifest = client.get_manifest(ref.repository, child.digest)
            parsed = ImageManifest.model_validate_json(manifest.data)
            config = client.fetch_blob(ref.repository, parsed.config.digest)
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
        layers={layer.digest: layer.size for layer in parsed.layers},
        memory_mib=memory,
        vcpus=vcpus,
    )
