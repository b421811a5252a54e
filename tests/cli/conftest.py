"""Fixtures of the CLI tests: the in-process ``ukedge`` runner (see kit.cli)."""

from __future__ import annotations

from kit.cli import ukedge

__all__ = ["ukedge"]
