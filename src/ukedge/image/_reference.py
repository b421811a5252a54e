"""Image references: ``[registry/]repository[:tag][@digest]``, as Docker and OCI spell them.

The grammar is the one of CNCF distribution's ``reference`` package, so that a name that works
with docker, skopeo or oras works with ukedge and the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ukedge.errors import UsageError

__all__ = [
    "DEFAULT_TAG",
    "NAME_PATTERN",
    "TAG_PATTERN",
    "Reference",
    "parse_reference",
]

DEFAULT_TAG = "latest"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
#: A repository name as the OCI distribution spec allows it.
NAME_PATTERN = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
_DOMAIN = re.compile(
    r"^(?:localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]+)?$"
)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}\Z")
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; ``registry`` is ``None`` for images known only locally."""

    repository: str
    tag: str | None = None
    digest: str | None = None
    registry: str | None = None

    @property
    def name(self) -> str:
        """Registry and repository, without tag or digest."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def reference(self) -> str:
        """What a registry calls the reference: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse ``text``; a reference with neither tag nor digest gets ``latest`` unless told not to.

    Raises :class:`~ukedge.errors.UsageError` naming the part that is wrong.
    """
    original = text
    if not text or text != text.strip():
        raise UsageError(f"invalid image reference {original!r}: empty or padded with spaces")
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise UsageError(f"invalid image reference {original!r}: bad digest {digest!r}")
    tag: str | None = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not TAG_PATTERN.match(tag):
            raise UsageError(
                f"invalid image reference {original!r}: tag {tag!r} must match "
                "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
            )
    registry: str | None = None
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.match(first):
            raise UsageError(f"invalid image reference {original!r}: bad registry {first!r}")
        registry, text = first, rest
    if not NAME_PATTERN.match(text) or len(text) > _MAX_NAME:
        raise UsageError(
            f"invalid image reference {original!r}: repository {text!r} must be lowercase "
            "letters and digits separated by '.', '_', '__', '-' or '/'"
        )
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(text, tag, digest, registry)
