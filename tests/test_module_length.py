"""No module under ``src/ukedge`` over :data:`LIMIT` lines without a reason written at its top.

A long module is usually several concepts in one file (the ``host/_manager.py`` of old held
seven), so one that grows past the limit is split by concept or says why it is one: a paragraph
of its module docstring that starts "Long on purpose:" (``vmm/qemu.py`` is the model). Lines are
counted as ``wc -l`` counts them; the docstring is read with :mod:`ast`, so a comment or a string
further down does not count as the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "ukedge"

#: The most lines a module may have without a reason at its top.
LIMIT = 450
#: What the module docstring says when a module is long on purpose.
MARK = "Long on purpose"


def _unexplained(path: Path) -> int | None:
    """The line count of ``path`` when it is over :data:`LIMIT` lines with no reason given."""
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    if lines <= LIMIT:
        return None
    doc = ast.get_docstring(ast.parse(text, str(path))) or ""
    return None if MARK in doc else lines


def test_long_modules_say_why() -> None:
    long = {
        path.relative_to(SRC.parent).as_posix(): lines
        for path in sorted(SRC.rglob("*.py"))
        if (lines := _unexplained(path)) is not None
    }
    assert not long, (
        f"modules over {LIMIT} lines whose docstring does not say {MARK!r}: split each by "
        f"concept, or write why it is one concept ('{MARK}: ...'): {long}"
    )


@pytest.mark.parametrize(
    ("doc", "lines", "flagged"),
    [
        ("One job.", LIMIT, False),
        ("One job.", LIMIT + 1, True),
        (f"One job.\n\n{MARK}: the backend's machine type stays private.", LIMIT + 1, False),
    ],
)
def test_the_guard_counts_lines_and_reads_the_docstring(
    tmp_path: Path, doc: str, lines: int, flagged: bool
) -> None:
    # A reason given only in a comment below the docstring does not count.
    body = [f'"""{doc}"""', f"# {MARK}: not in the docstring"]
    body += ["x = 1"] * (lines - len(body))
    module = tmp_path / "m.py"
    module.write_text("\n".join(body) + "\n", encoding="utf-8")
    assert (_unexplained(module) == lines) is flagged
