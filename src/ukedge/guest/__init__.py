"""The host↔guest contract, one copy: the names both sides use, the kernel command line, the
launch archive (and the cpio writer it and every image layer are written with), and the exit
line the guest init prints when the app ends.

Build, vmm, host and the CLI all use this package; it imports nothing of ukedge but its
errors. The guest side is ``init.c`` in :mod:`ukedge.build.guest`; the human-readable contract
is in ``docs/image-format.md``.
"""

from ukedge.guest._cmdline import guest_cmdline
from ukedge.guest._contract import (
    CONTROL_PORT,
    EXIT_PREFIX,
    HELD_LINE,
    LAUNCH_MAGIC,
    LAUNCH_PATH,
    RESULTS_DEVICE,
    RESULTS_PORT,
    RESUME_SIGNAL,
    RUNTIME_MOUNT,
    SEED_PATH,
    UNPACK_FAILED_STATUS,
)
from ukedge.guest._control import resume_message
from ukedge.guest._cpio import CpioArchive, CpioEntry, gzip_file, source_date_epoch
from ukedge.guest._exitline import (
    format_exit_line,
    is_held,
    is_protocol_line,
    parse_exit_line,
    read_exit_status,
)
from ukedge.guest._launch import (
    check_hostname,
    launch_archive,
    launch_records,
    parse_launch,
    seed_archive,
)

__all__ = [
    "CONTROL_PORT",
    "EXIT_PREFIX",
    "HELD_LINE",
    "LAUNCH_MAGIC",
    "LAUNCH_PATH",
    "RESULTS_DEVICE",
    "RESULTS_PORT",
    "RESUME_SIGNAL",
    "RUNTIME_MOUNT",
    "SEED_PATH",
    "UNPACK_FAILED_STATUS",
    "CpioArchive",
    "CpioEntry",
    "check_hostname",
    "format_exit_line",
    "guest_cmdline",
    "gzip_file",
    "is_held",
    "is_protocol_line",
    "launch_archive",
    "launch_records",
    "parse_exit_line",
    "parse_launch",
    "read_exit_status",
    "resume_message",
    "seed_archive",
    "source_date_epoch",
]
