"""The per-run launch archive: what to run, with which environment, under which hostname.

The launch file is a list of NUL-terminated ``key=value`` records (trivial to parse in C, and
any byte but NUL may appear in arguments and values). It travels as a tiny uncompressed cpio
appended as the last initrd, so one image runs with different arguments and environment
without being rebuilt.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from ukedge.errors import UsageError
from ukedge.guest._contract import LAUNCH_MAGIC, LAUNCH_PATH, SEED_PATH
from ukedge.guest._cpio import CpioArchive

__all__ = ["check_hostname", "launch_archive", "launch_records", "parse_launch", "seed_archive"]

_ENV_NAME_FORBIDDEN = ("=", "\0")
#: What init's RNDADDENTROPY buffer holds.
MAX_SEED = 256


def launch_records(
    *, argv: Sequence[str], env: Mapping[str, str], workdir: str, hostname: str
) -> bytes:
    """The launch file: the program and its arguments, its environment, the working directory
    and the hostname (``load_launch()`` in ``init.c`` reads it)."""
    records = [LAUNCH_MAGIC]
    for value in argv:
        _check(value, "argument")
        records.append(f"arg={value}")
    for key, value in env.items():
        if not key or any(c in key for c in _ENV_NAME_FORBIDDEN):
            raise UsageError(f"environment variable name {key!r} is empty or contains '=' or NUL")
        _check(value, f"environment variable {key}")
        records.append(f"env={key}={value}")
    _check(workdir, "workdir")
    if not workdir.startswith("/"):
        raise UsageError(f"workdir {workdir!r} must be an absolute path")
    records.append(f"workdir={workdir}")
    check_hostname(hostname)
    records.append(f"hostname={hostname}")
    return b"".join(r.encode() + b"\0" for r in records)


def check_hostname(name: str) -> None:
    """Refuse a hostname the guest cannot take (``sethostname`` takes at most 64 bytes)."""
    if not name or len(name.encode()) > 64 or any(c in name for c in "\0/ \n"):
        raise UsageError(
            f"hostname {name!r} must be 1 to 64 bytes without '/', space, newline or NUL"
        )


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
    *, argv: Sequence[str], env: Mapping[str, str], workdir: str, hostname: str
) -> bytes:
    """An uncompressed newc cpio holding only ``/ukedge/launch``; append it as the last initrd."""
    archive = CpioArchive()
    records = launch_records(argv=argv, env=env, workdir=workdir, hostname=hostname)
    archive.add_file(LAUNCH_PATH, records)
    buf = io.BytesIO()
    archive.write(buf)
    return buf.getvalue()


def seed_archive(seed: bytes) -> bytes:
    """An uncompressed newc cpio holding only :data:`SEED_PATH`: the guest's RNG seed for one
    boot, appended after the launch archive. The caller writes it where only QEMU's user can
    read it (mode 0600); it is kept apart from the launch archive, which is the same for every
    run a prewarm snapshot serves."""
    if not 0 < len(seed) <= MAX_SEED:
        raise UsageError(f"guest RNG seed must be 1 to {MAX_SEED} bytes, got {len(seed)}")
    archive = CpioArchive()
    archive.add_file(SEED_PATH, seed, 0o400)
    buf = io.BytesIO()
    archive.write(buf)
    return buf.getvalue()
