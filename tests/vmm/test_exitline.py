"""Reading the guest's exit report; must agree with the guest side's own parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.build.guest import parse_exit_line as guest_parse
from ukedge.vmm._exitline import parse_exit_line, read_exit_status

CASES = [
    ("", None),
    ('booting\r\nukedge-exit: {"status": 0}\r\n', 0),
    ('ukedge-exit: {"status": 3}\nukedge-exit: {"status": 143}\n', 143),
    ("app says ukedge-exit: nonsense\n", None),
    ('[    0.5] x\r\nukedge-exit: {"status": 255}', 255),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parse(text: str, expected: int | None) -> None:
    assert parse_exit_line(text) == expected
    assert guest_parse(text) == expected


def test_malformed_last_line_falls_back_to_earlier_good_one() -> None:
    assert parse_exit_line('ukedge-exit: {"status": 2}\nukedge-exit: {"status": "x"}\n') == 2


def test_read_exit_status_reads_the_tail_of_a_long_log(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("x" * 500_000 + '\nukedge-exit: {"status": 7}\r\n')
    assert read_exit_status(console) == 7
    assert read_exit_status(tmp_path / "missing.log") is None
