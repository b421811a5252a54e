"""Repository names, tags and digests as the distribution spec's patterns allow them."""

from __future__ import annotations

from ukedge.errors import UsageError
from ukedge.hub._errors import Code, DistributionError
from ukedge.image import NAME_PATTERN, TAG_PATTERN, validate_digest

__all__ = ["check_digest", "check_name", "check_reference", "is_digest"]

_MAX_NAME = 255


def check_name(name: str) -> str:
    if len(name) > _MAX_NAME or not NAME_PATTERN.match(name):
        raise DistributionError(
            Code.NAME_INVALID,
            f"invalid repository name {name!r}: lowercase letters and digits separated by "
            "'.', '_', '__', '-' or '/'",
            detail={"name": name},
        )
    return name


def is_digest(reference: str) -> bool:
    return ":" in reference


def check_digest(digest: str) -> str:
    try:
        return validate_digest(digest)
    except UsageError as exc:
        raise DistributionError(Code.DIGEST_INVALID, str(exc), detail={"digest": digest}) from exc


def check_reference(reference: str) -> str:
    """A tag or a digest; a bad tag is MANIFEST_INVALID (the spec has no TAG_INVALID)."""
    if is_digest(reference):
        return check_digest(reference)
    if not TAG_PATTERN.match(reference):
        raise DistributionError(
            Code.MANIFEST_INVALID,
            f"invalid tag {reference!r}: must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}",
            detail={"tag": reference},
        )
    return reference
