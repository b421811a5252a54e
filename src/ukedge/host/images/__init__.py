"""Images on one node: the cache of pulled images under a size budget, its usage records, and
the unpacked layers the machines boot from."""

from ukedge.host.images._cache import BUDGET_ENV, ImageCache, budget_from_env
from ukedge.host.images._layers import (
    SHARED_RUNTIME_ENV,
    RuntimeDisk,
    UnpackedLayers,
    shared_runtime_from_env,
)

__all__ = [
    "BUDGET_ENV",
    "SHARED_RUNTIME_ENV",
    "ImageCache",
    "RuntimeDisk",
    "UnpackedLayers",
    "budget_from_env",
    "shared_runtime_from_env",
]
