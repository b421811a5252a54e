"""Media types of ukedge images and of the OCI documents that carry them."""

from __future__ import annotations

__all__ = [
    "ARTIFACT_TYPE",
    "CONFIG",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "INITRD_GZIP",
    "INITRD_TYPES",
    "INITRD_ZSTD",
    "KERNEL",
    "KERNEL_GZIP",
    "KERNEL_TYPES",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_MANIFEST",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

#: ``artifactType`` of every ukedge image manifest.
ARTIFACT_TYPE = "application/vnd.ukedge.image.v1"
#: The image config blob (see :class:`ukedge.image.ImageConfig`).
CONFIG = "application/vnd.ukedge.config.v1+json"
#: A kernel that QEMU boots directly: an uncompressed ELF with a PVH note, or a bzImage.
KERNEL = "application/vnd.ukedge.kernel.v1"
#: The same kernel, gzip-compressed for transfer; hosts unpack it once per digest.
KERNEL_GZIP = "application/vnd.ukedge.kernel.v1+gzip"
#: A newc cpio archive; the initrd layers of an image are concatenated in manifest order.
INITRD_GZIP = "application/vnd.ukedge.initrd.v1.cpio+gzip"
INITRD_ZSTD = "application/vnd.ukedge.initrd.v1.cpio+zstd"

KERNEL_TYPES = frozenset({KERNEL, KERNEL_GZIP})
INITRD_TYPES = frozenset({INITRD_GZIP, INITRD_ZSTD})
#: Manifests that list other manifests (one per platform), OCI's and Docker's.
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
