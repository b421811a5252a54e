"""Turning an application directory into a ukedge image: the Ukfile, the runtimes (``static``,
``python``), reproducible initrd layers and the builder that writes them into the local store.

The guest init (the platform adaptation layer every runtime layer carries) lives in
:mod:`ukedge.build.guest`; the cpio writer and the host↔guest contract in :mod:`ukedge.guest`.
Everything here loads on first use, so that importing :mod:`ukedge.build.guest` (as the
instance manager does) does not import the builder.
"""

import typing

from ukedge._lazy import lazy_exports

if typing.TYPE_CHECKING:
    from ukedge.build._builder import (
        PYTHON_PACKAGES_DIR,
        BuildProgress,
        BuildResult,
        LayerReport,
        Stage,
        build_image,
    )
    from ukedge.build._elf import ElfInfo, NotElfError, read_elf
    from ukedge.build._files import DEFAULT_EXCLUDES, AppFile, select_files
    from ukedge.build._fsimage import (
        MKFS_EROFS,
        CpioMember,
        read_cpio,
        runtime_boot_archive,
        runtime_erofs,
        runtime_mounts,
    )
    from ukedge.build._index import IndexResult, build_index
    from ukedge.build._python import DROPPED_STDLIB, KEPT_EXTENSIONS, PYTHON_ENV, find_python
    from ukedge.build._ukfile import UKFILE_NAME, Ukfile, load_ukfile, parse_duration

__all__ = [
    "DEFAULT_EXCLUDES",
    "DROPPED_STDLIB",
    "KEPT_EXTENSIONS",
    "MKFS_EROFS",
    "PYTHON_ENV",
    "PYTHON_PACKAGES_DIR",
    "UKFILE_NAME",
    "AppFile",
    "BuildProgress",
    "BuildResult",
    "CpioMember",
    "ElfInfo",
    "IndexResult",
    "LayerReport",
    "NotElfError",
    "Stage",
    "Ukfile",
    "build_image",
    "build_index",
    "find_python",
    "load_ukfile",
    "parse_duration",
    "read_cpio",
    "read_elf",
    "runtime_boot_archive",
    "runtime_erofs",
    "runtime_mounts",
    "select_files",
]

_LAZY = {
    "PYTHON_PACKAGES_DIR": "ukedge.build._builder",
    "BuildProgress": "ukedge.build._builder",
    "BuildResult": "ukedge.build._builder",
    "LayerReport": "ukedge.build._builder",
    "Stage": "ukedge.build._builder",
    "build_image": "ukedge.build._builder",
    "ElfInfo": "ukedge.build._elf",
    "NotElfError": "ukedge.build._elf",
    "read_elf": "ukedge.build._elf",
    "MKFS_EROFS": "ukedge.build._fsimage",
    "CpioMember": "ukedge.build._fsimage",
    "read_cpio": "ukedge.build._fsimage",
    "runtime_boot_archive": "ukedge.build._fsimage",
    "runtime_erofs": "ukedge.build._fsimage",
    "runtime_mounts": "ukedge.build._fsimage",
    "DEFAULT_EXCLUDES": "ukedge.build._files",
    "AppFile": "ukedge.build._files",
    "select_files": "ukedge.build._files",
    "IndexResult": "ukedge.build._index",
    "build_index": "ukedge.build._index",
    "DROPPED_STDLIB": "ukedge.build._python",
    "KEPT_EXTENSIONS": "ukedge.build._python",
    "PYTHON_ENV": "ukedge.build._python",
    "find_python": "ukedge.build._python",
    "UKFILE_NAME": "ukedge.build._ukfile",
    "Ukfile": "ukedge.build._ukfile",
    "load_ukfile": "ukedge.build._ukfile",
    "parse_duration": "ukedge.build._ukfile",
}

__getattr__ = lazy_exports(globals(), _LAZY)
