"""Hub blob storage: one narrow driver interface, backends picked by name, one checking wrapper."""

from ukedge.hub.storage._checked import PATH_PATTERN, CheckedDriver, Observer
from ukedge.hub.storage._factory import create, driver_names, register
from ukedge.hub.storage.base import (
    FileInfo,
    InvalidPathError,
    PathNotFoundError,
    StorageDriver,
    StorageError,
)
from ukedge.hub.storage.filesystem import FilesystemDriver

register("filesystem", FilesystemDriver.from_config)

__all__ = [
    "PATH_PATTERN",
    "CheckedDriver",
    "FileInfo",
    "FilesystemDriver",
    "InvalidPathError",
    "Observer",
    "PathNotFoundError",
    "StorageDriver",
    "StorageError",
    "create",
    "driver_names",
    "register",
]
