"""The overview behind the hub's web page and ``/api/repositories``: every repository with its
tags, sizes, push times, whether a signature refers to each tagged manifest, and the platforms
of each tagged index (a multi-platform image).

Read-only: the queries share one read snapshot of the metadata, so the page shows one moment.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ukedge.hub._db import Database, manifests, repositories, tags
from ukedge.hub._manifest_parse import SIGNATURE_TYPES
from ukedge.image import ImageIndex, mediatypes

__all__ = ["Overview"]


class Overview:
    """Summaries of one hub's repositories, built from its metadata only (no blob is read)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def repositories(self) -> list[dict[str, Any]]:
        """Every repository that has a tag, with its tags, sizes, push times and signatures."""
        sig_types = sorted(SIGNATURE_TYPES)
        with self.db.read() as conn:
            rows = conn.execute(
                select(
                    repositories.c.name,
                    tags.c.name,
                    tags.c.digest,
                    manifests.c.media_type,
                    manifests.c.total_size,
                    manifests.c.pushed_at,
                    manifests.c.artifact_type,
                )
                .select_from(
                    repositories.join(tags, tags.c.repo_id == repositories.c.id).join(
                        manifests,
                        (manifests.c.repo_id == tags.c.repo_id)
                        & (manifests.c.digest == tags.c.digest),
                    )
                )
                .order_by(repositories.c.name, tags.c.name)
            ).all()
            signed = {
                (r[0], r[1])
                for r in conn.execute(
                    select(manifests.c.repo_id, manifests.c.subject).where(
                        manifests.c.artifact_type.in_(sig_types)
                    )
                ).all()
            }
            ids: dict[str, int] = dict(
                conn.execute(select(repositories.c.name, repositories.c.id)).all()
            )
            counts: dict[int, int] = dict(
                conn.execute(
                    select(manifests.c.repo_id, func.count()).group_by(manifests.c.repo_id)
                ).all()
            )
            # The platforms of tagged indexes, from their stored content (small documents).
            platforms: dict[tuple[int, str], list[str]] = {}
            tagged_indexes = {
                (ids[name], digest)
                for name, _, digest, media_type, *_ in rows
                if media_type in mediatypes.INDEX_TYPES
            }
            if tagged_indexes:
                for repo_id, digest, content in conn.execute(
                    select(manifests.c.repo_id, manifests.c.digest, manifests.c.content).where(
                        manifests.c.media_type.in_(sorted(mediatypes.INDEX_TYPES))
                    )
                ).all():
                    if (repo_id, digest) in tagged_indexes:
                        platforms[(repo_id, digest)] = _platforms(content)
        repos: dict[str, dict[str, Any]] = {}
        for name, tag, digest, media_type, size, pushed, artifact in rows:
            repo = repos.setdefault(
                name,
                {"name": name, "tags": [], "manifests": counts.get(ids[name], 0), "last_push": 0.0},
            )
            repo["tags"].append(
                {
                    "tag": tag,
                    "digest": digest,
                    "media_type": media_type,
                    "artifact_type": artifact,
                    "size": size,
                    "pushed_at": pushed,
                    "signed": (ids[name], digest) in signed,
                    "platforms": platforms.get((ids[name], digest), []),
                }
            )
            repo["last_push"] = max(repo["last_push"], pushed)
        return list(repos.values())


def _platforms(content: bytes) -> list[str]:
    """``linux/amd64``… of an index's entries; [] for one that does not parse as ours."""
    try:
        return [str(p) for p in ImageIndex.model_validate_json(content).platforms]
    except ValueError:
        return []
