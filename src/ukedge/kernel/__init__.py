"""Kernel profiles and their builds: a minimal, all-built-in Linux per profile, built once from
Debian's linux-source and cached by a hash of everything that changes it."""

from ukedge.kernel._build import (
    DEFAULT_SOURCE,
    Kernel,
    ensure_kernel,
    kernel_key,
    list_kernels,
    source,
)
from ukedge.kernel._profiles import (
    Profile,
    load_profile,
    merge_profiles,
    parse_profile,
    profiles,
)

__all__ = [
    "DEFAULT_SOURCE",
    "Kernel",
    "Profile",
    "ensure_kernel",
    "kernel_key",
    "list_kernels",
    "load_profile",
    "merge_profiles",
    "parse_profile",
    "profiles",
    "source",
]
