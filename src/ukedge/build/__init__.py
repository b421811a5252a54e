"""Turning an application directory into a ukedge image: the Ukfile, the runtimes (``static``,
``python``), reproducible initrd layers and the builder that writes them into the local store.

The guest init (the platform adaptation layer every runtime layer carries) lives in
:mod:`ukedge.build.guest`; the cpio writer and the host↔guest contract in :mod:`ukedge.guest`.
"""

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
from ukedge.build._python import DROPPED_STDLIB, KEPT_EXTENSIONS, PYTHON_ENV, find_python
from ukedge.build._ukfile import UKFILE_NAME, Ukfile, load_ukfile, parse_duration

__all__ = [
    "DEFAULT_EXCLUDES",
    "DROPPED_STDLIB",
    "KEPT_EXTENSIONS",
    "PYTHON_ENV",
    "PYTHON_PACKAGES_DIR",
    "UKFILE_NAME",
    "AppFile",
    "BuildProgress",
    "BuildResult",
    "ElfInfo",
    "LayerReport",
    "NotElfError",
    "Stage",
    "Ukfile",
    "build_image",
    "find_python",
    "load_ukfile",
    "parse_duration",
    "read_elf",
    "select_files",
]
