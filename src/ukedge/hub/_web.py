"""The hub's web page: repositories, tags, sizes, last push, signature presence, and the
platforms of multi-platform images.

Server-rendered with plain string templates; every value goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import time
from typing import Any

from ukedge.units import format_size

__all__ = ["render_index"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ukedge hub</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
table{{border-collapse:collapse;margin-bottom:2rem}}
th,td{{text-align:left;padding:.3rem .8rem;border-bottom:1px solid #ddd}}
code{{font-size:.85em}} .signed{{color:#070}} .unsigned{{color:#888}}
</style></head>
<body>
<h1>ukedge hub</h1>
<p id="summary">{summary}</p>
{body}
<p><small>Pull with <code>ukedge pull {host}/REPOSITORY:TAG</code>.
API: <a href="/docs">/docs</a> · <a href="/metrics">/metrics</a></small></p>
</body></html>
"""

_REPO = """<section class="repository" data-repository="{name}">
<h2>{name}</h2>
<p>{count} manifest(s), last push {last}</p>
<table><thead><tr><th>tag</th><th>digest</th><th>type</th><th>size</th><th>pushed</th>
<th>signature</th></tr></thead><tbody>
{rows}
</tbody></table></section>"""

_ROW = (
    '<tr class="tag" data-tag="{tag}"><td>{tag}</td><td><code>{digest}</code></td>'
    '<td>{kind}</td><td>{size}</td><td>{pushed}</td><td class="{sigclass}">{signed}</td></tr>'
)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _kind(tag: dict[str, Any]) -> str:
    if tag.get("platforms"):
        return "index: " + ", ".join(tag["platforms"])
    return str(tag["artifact_type"] or tag["media_type"])


def render_index(repositories: list[dict[str, Any]], host: str) -> str:
    e = html.escape
    sections = []
    for repo in repositories:
        rows = "\n".join(
            _ROW.format(
                tag=e(t["tag"]),
                digest=e(t["digest"][:19]),
                kind=e(_kind(t)),
                size=e(format_size(t["size"])),
                pushed=e(_when(t["pushed_at"])),
                sigclass="signed" if t["signed"] else "unsigned",
                signed="signed" if t["signed"] else "none",
            )
            for t in repo["tags"]
        )
        sections.append(
            _REPO.format(
                name=e(repo["name"]),
                count=repo["manifests"],
                last=e(_when(repo["last_push"])),
                rows=rows,
            )
        )
    tags = sum(len(r["tags"]) for r in repositories)
    summary = f"{len(repositories)} repositories, {tags} tags"
    body = "\n".join(sections) or "<p>No images yet. Push one with <code>ukedge push</code>.</p>"
    return _PAGE.format(summary=e(summary), body=body, host=e(host))
