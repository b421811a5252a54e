"""OCI descriptors, image manifests and indexes (image-spec v1.1), as ukedge reads and writes them.

Unknown fields are kept (``extra="allow"``) so that a manifest made by another tool survives a
round trip through ukedge byte for byte once it is re-serialised from its original bytes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ukedge.image._config import canonical_json
from ukedge.image._mediatypes import ARTIFACT_TYPE, OCI_INDEX, OCI_MANIFEST
from ukedge.image._platform import Platform

__all__ = ["Descriptor", "ImageIndex", "ImageManifest"]

REF_NAME = "org.opencontainers.image.ref.name"


class _Document(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    def to_json(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True, exclude_none=True))


class Descriptor(_Document):
    media_type: str = Field(alias="mediaType")
    digest: str
    size: int = Field(ge=0)
    annotations: dict[str, str] | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")
    #: Set on the entries of a multi-platform index: which platform the manifest is for.
    platform: Platform | None = None

    @property
    def ref_name(self) -> str | None:
        return (self.annotations or {}).get(REF_NAME)


class ImageManifest(_Document):
    schema_version: int = Field(default=2, alias="schemaVersion")
    media_type: str = Field(default=OCI_MANIFEST, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    config: Descriptor
    layers: list[Descriptor] = Field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class ImageIndex(_Document):
    schema_version: int = Field(default=2, alias="schemaVersion")
    media_type: str = Field(default=OCI_INDEX, alias="mediaType")
    manifests: list[Descriptor] = Field(default_factory=list)
    annotations: dict[str, str] | None = None

    @classmethod
    def of_platforms(
        cls, entries: list[tuple[Descriptor, Platform]], annotations: dict[str, str] | None = None
    ) -> ImageIndex:
        """The index of a multi-platform ukedge image: one manifest per platform, in the order
        given (a build's ``--platform`` order, so equal inputs give equal bytes)."""
        seen: list[Platform] = []
        manifests = []
        for desc, platform in entries:
            if any(platform.matches(p) for p in seen):
                raise ValueError(f"two manifests for {platform}")
            seen.append(platform)
            manifests.append(
                Descriptor(
                    mediaType=desc.media_type,
                    digest=desc.digest,
                    size=desc.size,
                    artifactType=ARTIFACT_TYPE,
                    platform=platform.explicit(),
                )
            )
        return cls(manifests=manifests, annotations=annotations or None)

    @property
    def platforms(self) -> list[Platform]:
        """The platforms its entries name, in order (entries without one are left out)."""
        return [m.platform for m in self.manifests if m.platform is not None]
