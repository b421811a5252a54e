"""The pure parts of live migration's QMP logic: capabilities and when post-copy starts."""

from __future__ import annotations

from typing import Any

import pytest

from ukedge.vmm._migrate import capabilities, should_start_postcopy


def _states(caps: list[dict[str, Any]]) -> dict[str, bool]:
    return {c["capability"]: c["state"] for c in caps}


def test_every_capability_is_said_explicitly() -> None:
    """QEMU keeps capabilities for the process's life: a machine whose post-copy move failed
    must not take post-copy into its next (pre-copy) move."""
    precopy = _states(capabilities(auto_converge=True, postcopy=False))
    assert precopy == {"auto-converge": True, "x-ignore-shared": False, "postcopy-ram": False}
    postcopy = _states(capabilities(auto_converge=False, postcopy=True))
    assert postcopy == {"auto-converge": False, "x-ignore-shared": False, "postcopy-ram": True}


def _info(status: str, syncs: int | None) -> dict[str, Any]:
    info: dict[str, Any] = {"status": status}
    if syncs is not None:
        info["ram"] = {"dirty-sync-count": syncs, "remaining": 1 << 20}
    return info


@pytest.mark.parametrize(
    ("info", "switch"),
    [
        (_info("setup", None), False),
        (_info("active", None), False),  # no RAM figures yet
        (_info("active", 1), False),  # the first pass over RAM is under way
        (_info("active", 2), True),  # it is done: what is left is what the guest dirtied
        (_info("active", 7), True),
        (_info("device", 2), False),  # pre-copy is finishing anyway
        (_info("completed", 2), False),
        (_info("failed", 2), False),
        ("not a dict", False),
    ],
)
def test_post_copy_starts_after_the_first_pass(info: object, switch: bool) -> None:
    assert should_start_postcopy(info) is switch
