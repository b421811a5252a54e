"""``search`` and ``list_tags``: what a registry holds, found by name and by image labels.

The distribution API has no search endpoint, so search reads the catalog, keeps repositories
whose name matches, and for the others looks inside: the config of one tag per repository
(``latest`` if there is one, else the last tag in sort order) is fetched and its name and labels
matched. Configs are small; they are fetched a few at a time.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ukedge.errors import RegistryError
from ukedge.image import DEFAULT_TAG, ImageIndex, ImageManifest, mediatypes
from ukedge.registry._client import RegistryClient
from ukedge.registry._transfer import select_platform

__all__ = ["SearchHit", "list_tags", "search"]

log = logging.getLogger(__name__)
_INDEX_TYPES = frozenset({mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST})


@dataclass(frozen=True)
class SearchHit:
    """A repository that matched; ``matched`` says why (``name``, ``label key=value``…)."""

    repository: str
    tag: str | None
    matched: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    image_name: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "matched": list(self.matched),
            "labels": self.labels,
            "name": self.image_name,
        }


def list_tags(
    client: RegistryClient, repository: str, *, page_size: int | None = None
) -> list[str]:
    return sorted(client.tags(repository, page_size=page_size))


def _pick_tag(tags: list[str]) -> str | None:
    if DEFAULT_TAG in tags:
        return DEFAULT_TAG
    return sorted(tags)[-1] if tags else None


def _config_of(client: RegistryClient, repository: str, tag: str) -> dict[str, object] | None:
    remote = client.get_manifest(repository, tag)
    if remote.media_type in _INDEX_TYPES:
        child = select_platform(ImageIndex.model_validate_json(remote.data))
        remote = client.get_manifest(repository, child.digest)
    manifest = ImageManifest.model_validate_json(remote.data)
    if manifest.config.size > 1 << 20:
        return None
    config = json.loads(client.fetch_blob(repository, manifest.config.digest))
    return config if isinstance(config, dict) else None


def _labels(config: dict[str, object]) -> dict[str, str]:
    """Labels of a ukedge config (``labels``) or an OCI/Docker one (``config.Labels``)."""
    labels = config.get("labels")
    inner = config.get("config")
    if not isinstance(labels, dict) and isinstance(inner, dict):
        labels = inner.get("Labels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _inspect(
    client: RegistryClient, repository: str, term: str, name_hit: bool
) -> SearchHit | None:
    matched = ["name"] if name_hit else []
    try:
        tag = _pick_tag(client.tags(repository))
        config = _config_of(client, repository, tag) if tag else None
    except (RegistryError, ValueError) as exc:
        log.debug("search: cannot inspect %s: %s", repository, exc)
        return SearchHit(repository, None, tuple(matched)) if name_hit else None
    labels = _labels(config) if config else {}
    image_name = config.get("name") if config else None
    image_name = image_name if isinstance(image_name, str) else None
    if image_name and term in image_name.lower() and not name_hit:
        matched.append("image name")
    matched += [
        f"label {k}={v}"
        for k, v in sorted(labels.items())
        if term in k.lower() or term in v.lower()
    ]
    if not matched:
        return None
    return SearchHit(repository, tag, tuple(matched), labels, image_name)


def search(client: RegistryClient, term: str, *, limit: int = 200) -> list[SearchHit]:
    """Repositories whose name, image name or labels contain ``term`` (case-insensitive).

    At most ``limit`` repositories of the catalog are inspected.
    """
    needle = term.strip().lower()
    repositories = client.catalog()[:limit]
    with ThreadPoolExecutor(
        max_workers=client.max_workers, thread_name_prefix="ukedge-search"
    ) as pool:
        hits = pool.map(
            lambda repo: _inspect(client, repo, needle, needle in repo.lower()), repositories
        )
        return [hit for hit in hits if hit is not None]
