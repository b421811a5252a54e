"""Fixtures of the hub tests; the helpers live in hub_fixtures (a unique module name)."""

from hub_fixtures import client, hub, hub_factory

__all__ = ["client", "hub", "hub_factory"]
