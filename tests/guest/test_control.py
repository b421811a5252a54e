"""The resume message a clone gets on its control port (init's read_control() reads it)."""

from __future__ import annotations

import pytest

from ukedge.errors import UsageError
from ukedge.guest import resume_message


def test_resume_message_ends_with_resumed() -> None:
    message = resume_message(
        clock=1700000000.5, seed=b"\x01\xff", mac="02:00:5e:10:00:01", hostname="edge-7"
    )
    assert message == (
        b"time 1700000000.500000\nseed 01ff\nmac 02:00:5e:10:00:01\nhostname edge-7\nresumed\n"
    )


def test_mac_and_hostname_are_optional() -> None:
    assert resume_message(clock=1.0, seed=b"\0") == b"time 1.000000\nseed 00\nresumed\n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": b""}, "seed"),
        ({"seed": bytes(257)}, "seed"),
        ({"mac": "03:00:00:00:00:01"}, "unicast"),  # multicast bit
        ({"mac": "02:00:00:00:00"}, "unicast"),
        ({"mac": "02:00:00:00:00:01\nkill"}, "unicast"),
        ({"hostname": "a\nkill"}, "hostname"),
    ],
)
def test_bad_values_never_reach_the_guest(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"clock": 1.0, "seed": b"\0", **kwargs}
    with pytest.raises(UsageError, match=message):
        resume_message(**args)  # type: ignore[arg-type]
