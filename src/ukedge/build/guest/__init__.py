"""The guest side of ukedge images: the tiny static init (the platform adaptation layer), built
from ``init.c`` and put into every runtime layer, and the host's TSC rate the guest kernel is
told. The contract init keeps with the host is :mod:`ukedge.guest`."""

from ukedge.build.guest._init import add_platform, compiler, ensure_init, init_source
from ukedge.build.guest._tsc import host_tsc_khz

__all__ = [
    "add_platform",
    "compiler",
    "ensure_init",
    "host_tsc_khz",
    "init_source",
]
