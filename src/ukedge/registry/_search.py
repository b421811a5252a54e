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

from ukedge.errors import RegistryError, UsageError
from ukedge.image import DEFAULT_TAG, ImageIndex, ImageManifest, mediatypes, parse_reference
from ukedge.registry._client import RegistryClient
from ukedge.registry._settings import DEFAULT_REGISTRY_ENV, default_registry, remote_reference
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


def _own_client(
    registry: str, client: RegistryClient | None, insecure: bool | None
) -> RegistryClient:
    if client is not None and client.registry != registry:
        raise UsageError(f"{registry} is not {client.registry}, the registry this client talks to")
    return client if client is not None else RegistryClient(registry, insecure=insecure)


def list_tags(
    repository: str,
    *,
    client: RegistryClient | None = None,
    insecure: bool | None = None,
    page_size: int | None = None,
) -> list[str]:
    """Tags of ``HOST/NAME`` (or ``NAME`` with ``UKEDGE_REGISTRY`` set), sorted."""
    ref = parse_reference(repository, default_tag=False)
    if ref.digest or ref.tag:
        raise UsageError(f"give a repository without tag or digest: {ref.name}")
    ref = remote_reference(repository, action="listing tags")
    assert ref.registry is not None
    own = _own_client(ref.registry, client, insecure)
    try:
        return sorted(own.tags(ref.repository, page_size=page_size))
    finally:
        if own is not client:
            own.close()


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


def search(
    term: str,
    *,
    registry: str | None = None,
    client: RegistryClient | None = None,
    insecure: bool | None = None,
    limit: int = 200,
) -> list[SearchHit]:
    """Repositories whose name, image name or labels contain ``term`` (case-insensitive).

    ``registry`` defaults to the client's, then ``UKEDGE_REGISTRY``. At most ``limit``
    repositories of the catalog are inspected.
    """
    needle = term.strip().lower()
    if not needle:
        raise UsageError("give a search term")
    host = registry or (client.registry if client else None) or default_registry()
    if host is None:
        raise UsageError(
            f"search needs a registry: pass --registry HOST[:PORT] or set {DEFAULT_REGISTRY_ENV}"
        )
    own = _own_client(host, client, insecure)
    try:
        repositories = own.catalog()[:limit]
        with ThreadPoolExecutor(own.max_workers, thread_name_prefix="ukedge-search") as pool:
            hits = pool.map(
                lambda repo: _inspect(own, repo, needle, needle in repo.lower()), repositories
            )
            return [hit for hit in hits if hit is not None]
    finally:
        if own is not client:
            own.close()
