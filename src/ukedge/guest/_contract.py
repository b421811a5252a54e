"""The names the host and the guest init agree on.

``init.c`` (in :mod:`ukedge.build.guest`) spells each of these as a ``#define`` of the same
name; ``tests/guest/test_init_agrees.py`` compiles the init's parsers and writers and checks
them against this package, so the two sides cannot drift apart unnoticed. The human-readable
version is "The guest contract" in ``docs/image-format.md``.
"""

from __future__ import annotations

import signal

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
]

#: Where the application finds the results device (a symlink made by init).
RESULTS_DEVICE = "/dev/ukedge-results"
#: Name of the virtio-serial port the host reads results from.
RESULTS_PORT = "ukedge.results"
#: Name of the virtio-serial port the host writes control lines (``stop``, ``kill``) to.
CONTROL_PORT = "ukedge.control"
#: The per-run launch file inside the guest (from the last initrd).
LAUNCH_PATH = "/ukedge/launch"
#: The per-boot RNG seed inside the guest (from the last initrd); init credits it to the kernel
#: RNG and deletes it. It travels in a file only QEMU's user can read, never on the command line
#: (which every local user sees in ``ps``).
SEED_PATH = "/ukedge/seed"
#: First record of every launch file; bump the number on an incompatible change.
LAUNCH_MAGIC = "ukedge-launch=1"
#: Init prints ``ukedge-exit: {"status": N}`` on the console when the application ends.
EXIT_PREFIX = "ukedge-exit: "
#: Init sends this to the app's process group when a resumed clone has its own clock, entropy
#: and hostname. Ignored by default, so apps that do not ask for it never notice.
RESUME_SIGNAL = int(signal.SIGWINCH)
#: Init prints this line when ``ukedge.hold`` makes it wait before starting the app (a
#: ``snapshot = "pre-app"`` prewarm snapshots the machine then); ``resumed`` releases it.
HELD_LINE = "ukedge-held"
#: Init's exit status when the kernel could not unpack the image's layers into the guest's RAM
#: root ("Initramfs unpacking failed"): the guest memory is too small for the image.
UNPACK_FAILED_STATUS = 125
#: Where init mounts the shared runtime image (``ukedge.ro=`` names the directories it then
#: binds from there over the same paths of the RAM root).
RUNTIME_MOUNT = "/ukedge/runtime"
