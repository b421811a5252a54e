"""The ``ukedge`` entry point run in-process, as the CLI tests drive it: argument parsing, error
rendering and exit codes exactly as a user gets them, with stdout and stderr captured."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ukedge.cli.main import main


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str  # white space folded, so a wrapped message matches as one line


@pytest.fixture
def ukedge(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Run]:
    """Run ``main()`` with the given arguments (and ``stdin`` text), capturing its output."""

    def run(*args: str, stdin: str = "") -> Run:
        monkeypatch.setattr(sys, "argv", ["ukedge", *args])
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code: int | str | None = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return Run(int(code or 0), captured.out, " ".join(captured.err.split()))

    return run
