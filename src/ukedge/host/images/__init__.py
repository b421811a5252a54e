"""Images on one node: the cache of pulled images under a size budget, its usage records, and
the unpacked layers the machines boot from."""

from ukedge.host.images._cache import BUDGET_ENV, ImageCache, budget_from_env
from ukedge.host.images._layers import RuntimeDisk, UnpackedLayers

__all__ = ["BUDGET_ENV", "ImageCache", "RuntimeDisk", "UnpackedLayers", "budget_from_env"]
