"""The kernel command line of one boot: the image's own plus the ``ukedge.*`` keys init reads.

Values are checked here because the kernel splits the command line on spaces and init ignores
what it cannot parse. ``parse_cmdline()`` in ``init.c`` is the other side. Nothing secret goes
here: every local user reads QEMU's command line in ``ps``; the RNG seed travels in
:func:`~ukedge.guest.seed_archive` instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface

from ukedge.errors import UsageError

__all__ = ["guest_cmdline"]


def guest_cmdline(
    base: str,
    *,
    ip: str | None,
    gateway: str | None,
    dns: str | None,
    clock: float | None = None,
    tsc_khz: int | None = None,
    snapshot_source: bool = False,
    hold: bool = False,
    ro_mounts: Sequence[str] = (),
) -> str:
    """The kernel command line for one boot: the image's ``base`` plus what init reads.

    ``ip`` is ``address/prefix`` for eth0 (without it the guest has only loopback); ``clock``
    sets the guest's wall clock (default: the host's now), since the guest may have no RTC.
    ``tsc_khz`` (the host's, from
    :func:`ukedge.build.guest.host_tsc_khz`) lets the guest kernel skip TSC calibration and use
    the TSC clock (``tsc_early_khz=``, ``tsc=reliable``); None leaves calibration to the guest.

    ``snapshot_source`` is for a boot that will be saved as a snapshot for others to resume
    from (prewarm): the guest kernel then zeroes every page it frees (``init_on_free=1``), so
    the freed initramfs and boot-time garbage go into the snapshot as zero pages, which a
    resumed QEMU never writes: a resumed idle sensor-agg's RSS drops from 94 to 76 MiB. Not for
    ordinary boots: the kernel then zeroes all guest RAM as it starts (cold sensor-agg boot
    2.0 s → 2.5 s, and every page ends up resident). Resumed guests keep zeroing what they
    free, which costs little in an idle or steady app.

    ``hold`` makes init print :data:`~ukedge.guest.HELD_LINE` and wait for ``resumed`` on the
    control port before it starts the app: the moment a ``pre-app`` prewarm snapshots.

    ``ro_mounts`` are the directories init binds from the shared runtime image (the machine's
    read-only disk: virtio-pmem, else virtio-blk) before it starts the app.
    """
    parts = base.split()
    if ip is not None:
        try:
            iface = IPv4Interface(ip if "/" in ip else f"{ip}/24")
        except ValueError as exc:
            raise UsageError(f"guest ip {ip!r} is not an IPv4 address/prefix: {exc}") from None
        parts.append(f"ukedge.ip={iface.with_prefixlen}")
    for name, value in (("gw", gateway), ("dns", dns)):
        if value is None:
            continue
        try:
            parts.append(f"ukedge.{name}={IPv4Address(value)}")
        except ValueError:
            raise UsageError(f"guest {name} {value!r} is not an IPv4 address") from None
    if gateway is not None and ip is None:
        raise UsageError("a guest gateway needs a guest ip")
    if tsc_khz is not None:
        if not 1000 <= tsc_khz <= 100_000_000:
            raise UsageError(f"TSC frequency {tsc_khz} kHz is out of range")
        parts += [f"tsc_early_khz={tsc_khz}", "tsc=reliable"]
    if snapshot_source:
        parts.append("init_on_free=1")
    if hold:
        parts.append("ukedge.hold")
    if ro_mounts:
        for mount in ro_mounts:
            if not mount.startswith("/") or any(c in mount for c in ", \t\n"):
                raise UsageError(f"runtime image directory {mount!r} is not an absolute path")
        parts.append("ukedge.ro=" + ",".join(ro_mounts))
    now = time.time() if clock is None else clock
    parts.append(f"ukedge.time={now:.3f}")
    return " ".join(parts)
