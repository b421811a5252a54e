"""The per-run launch archive and the platform files every image carries.

The launch file is a list of NUL-terminated ``key=value`` records (trivial to parse in C, and
any byte but NUL may appear in arguments and values). It travels as a tiny uncompressed cpio
appended as the last initrd, so one image runs with different arguments and environment
without being rebuilt.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from ukedge.build._cpio import CpioArchive
from ukedge.build.guest._contract import LAUNCH_PATH
from ukedge.build.guest._init import ensure_init
from ukedge.errors import UsageError
from ukedge.image import ImageConfig

__all__ = ["LAUNCH_MAGIC", "add_platform", "launch_archive", "launch_records", "parse_launch"]

#: First record of every launch file; bump the number on an incompatible change.
LAUNCH_MAGIC = "ukedge-launch=1"

_ENV_NAME_FORBIDDEN = ("=", "\0")


def launch_records(
    config: ImageConfig,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] | None = None,
    hostname: str | None = None,
) -> bytes:
    """The launch file: the config's entrypoint + (``args`` or the config's args), the config's
    environment overlaid with ``env``, the working directory and the hostname."""
    argv = [*config.entrypoint, *(config.args if args is None else args)]
    merged = {**config.env, **(env or {})}
    name = hostname or config.name
    records = [LAUNCH_MAGIC]
    for value in argv:
        _check(value, "argument")
        records.append(f"arg={value}")
    for key, value in merged.items():
        if not key or any(c in key for c in _ENV_NAME_FORBIDDEN):
            raise UsageError(f"environment variable name {key!r} is empty or contains '=' or NUL")
        _check(value, f"environment variable {key}")
        records.append(f"env={key}={value}")
    _check(config.workdir, "workdir")
    if not config.workdir.startswith("/"):
        raise UsageError(f"workdir {config.workdir!r} must be an absolute path")
    records.append(f"workdir={config.workdir}")
    if not name or len(name.encode()) > 64 or any(c in name for c in "\0/ "):
        raise UsageError(f"hostname {name!r} must be 1 to 64 bytes without '/', ' ' or NUL")
    records.append(f"hostname={name}")
    return b"".join(r.encode() + b"\0" for r in records)


def _check(value: str, what: str) -> None:
    if "\0" in value:
        raise UsageError(f"{what} {value!r} contains a NUL byte")


def parse_launch(data: bytes) -> dict[str, list[str]]:
    """Read a launch file back (what init does), for tests and ``inspect``-style tools."""
    if not data.endswith(b"\0"):
        raise UsageError("launch file does not end with a NUL")
    records = data[:-1].decode().split("\0")
    if records[0] != LAUNCH_MAGIC:
        raise UsageError(f"launch file does not start with {LAUNCH_MAGIC!r}")
    parsed: dict[str, list[str]] = {}
    for record in records[1:]:
        key, _, value = record.partition("=")
        parsed.setdefault(key, []).append(value)
    return parsed


def launch_archive(
    config: ImageConfig,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] | None = None,
    hostname: str | None = None,
) -> bytes:
    """An uncompressed newc cpio holding only ``/ukedge/launch``; append it as the last initrd."""
    archive = CpioArchive()
    archive.add_file(LAUNCH_PATH, launch_records(config, env=env, args=args, hostname=hostname))
    buf = io.BytesIO()
    archive.write(buf)
    return buf.getvalue()


def add_platform(archive: CpioArchive) -> None:
    """Put PID 1 and the directories it mounts on into ``archive`` (an image's runtime layer).

    ``dev/console`` must exist in the initramfs itself: the kernel opens it as init's stdio
    before init can mount devtmpfs.
    """
    archive.add_file("init", ensure_init(), 0o755)
    for name in ("dev", "proc", "sys", "tmp", "run", "etc", "ukedge"):
        archive.add_dir(name, 0o1777 if name == "tmp" else 0o755)
    archive.add_char_device("dev/console", 5, 1, 0o600)
