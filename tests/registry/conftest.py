"""Fixtures of the registry client tests (they and the helpers live in :mod:`kit.registry`)."""

from kit.registry import distribution

__all__ = ["distribution"]
