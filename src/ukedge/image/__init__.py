"""The OCI model of ukedge images: media types, config schema, digests, references, the store.

This package imports nothing else of ukedge but :mod:`ukedge.errors`; everything else builds on it.
"""

from ukedge.image import _mediatypes as mediatypes
from ukedge.image._config import (
    BootConfig,
    HealthCheck,
    ImageConfig,
    KernelInfo,
    PortSpec,
    canonical_json,
)
from ukedge.image._digest import (
    DIGEST_PATTERN,
    digest_bytes,
    digest_file,
    digest_hex,
    validate_digest,
)
from ukedge.image._keys import (
    PrivateKey,
    PublicKey,
    decrypt_private_key,
    encrypt_private_key,
    generate_private_key,
    read_public_keys,
    write_key_pair,
)
from ukedge.image._manifest import REF_NAME, Descriptor, ImageIndex, ImageManifest
from ukedge.image._platform import (
    SUPPORTED_PLATFORMS,
    Architecture,
    Platform,
    host_platform,
    parse_platform,
    parse_platforms,
)
from ukedge.image._reference import (
    DEFAULT_TAG,
    NAME_PATTERN,
    TAG_PATTERN,
    Reference,
    parse_reference,
)
from ukedge.image._signing import (
    SIGNATURE_ANNOTATION,
    SIGNATURE_ARTIFACT_TYPE,
    SIMPLE_SIGNING,
    Signature,
    Verdict,
    make_signature,
    signature_payload,
    verify_signatures,
)
from ukedge.image._store import BlobWriter, ImageStore, StoredImage

__all__ = [
    "DEFAULT_TAG",
    "DIGEST_PATTERN",
    "NAME_PATTERN",
    "REF_NAME",
    "SIGNATURE_ANNOTATION",
    "SIGNATURE_ARTIFACT_TYPE",
    "SIMPLE_SIGNING",
    "SUPPORTED_PLATFORMS",
    "TAG_PATTERN",
    "Architecture",
    "BlobWriter",
    "BootConfig",
    "Descriptor",
    "HealthCheck",
    "ImageConfig",
    "ImageIndex",
    "ImageManifest",
    "ImageStore",
    "KernelInfo",
    "Platform",
    "PortSpec",
    "PrivateKey",
    "PublicKey",
    "Reference",
    "Signature",
    "StoredImage",
    "Verdict",
    "canonical_json",
    "decrypt_private_key",
    "digest_bytes",
    "digest_file",
    "digest_hex",
    "encrypt_private_key",
    "generate_private_key",
    "host_platform",
    "make_signature",
    "mediatypes",
    "parse_platform",
    "parse_platforms",
    "parse_reference",
    "read_public_keys",
    "signature_payload",
    "validate_digest",
    "verify_signatures",
    "write_key_pair",
]
