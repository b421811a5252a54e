"""The guest side of ukedge images: the tiny static init (the platform adaptation layer) and the
contract the host uses to talk to it (command line, launch archive, ports, exit line)."""

from ukedge.build.guest._contract import (
    CONTROL_PORT,
    EXIT_PREFIX,
    LAUNCH_PATH,
    RESULTS_DEVICE,
    RESULTS_PORT,
    guest_cmdline,
    parse_exit_line,
)
from ukedge.build.guest._init import compiler, ensure_init, init_source
from ukedge.build.guest._launch import (
    LAUNCH_MAGIC,
    add_platform,
    launch_archive,
    launch_records,
    parse_launch,
)
from ukedge.build.guest._tsc import host_tsc_khz

__all__ = [
    "CONTROL_PORT",
    "EXIT_PREFIX",
    "LAUNCH_MAGIC",
    "LAUNCH_PATH",
    "RESULTS_DEVICE",
    "RESULTS_PORT",
    "add_platform",
    "compiler",
    "ensure_init",
    "guest_cmdline",
    "host_tsc_khz",
    "init_source",
    "launch_archive",
    "launch_records",
    "parse_exit_line",
    "parse_launch",
]
