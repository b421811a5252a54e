"""Fixtures of the hub tests; they and the helpers live in :mod:`kit.hub`."""

from kit.hub import client, hub, hub_factory

__all__ = ["client", "hub", "hub_factory"]
