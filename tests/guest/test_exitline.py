"""The exit line: one parser, and the corpus of console texts it must read the same way the
guest init means them (``test_init_agrees.py`` checks init's side against the same corpus)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.guest import (
    format_exit_line,
    is_held,
    is_protocol_line,
    parse_exit_line,
    read_exit_status,
)

#: (console text, the status the host must read from it)
CORPUS: list[tuple[str, int | None]] = [
    ("", None),
    ("kernel panic\n", None),
    ('booting\r\nukedge-exit: {"status": 0}\r\n', 0),
    ('ukedge-exit: {"status":0}\n', 0),  # JSON whitespace is JSON's business
    ('ukedge-exit: { "status" :\t7 }\n', 7),
    ('ukedge-exit: {"status": 3, "signal": null}\n', 3),  # other keys ignored
    ('ukedge-exit: {"status": 3}\nukedge-exit: {"status": 143}\n', 143),  # the last wins
    ('[    0.5] x\r\nukedge-exit: {"status": 255}', 255),  # no newline at the very end
    ('no newline from appukedge-exit: {"status": 0}\n', 0),  # after an unterminated app line
    (
        'booting\nukedge-exit: {"status": 1}\napp output\r\n'
        'ukedge-exit: {"status": 137}\r\n[    0.5] reboot: Restarting system\n',
        137,
    ),
    # Not exit lines: a status out of range or not an integer.
    ('ukedge-exit: {"status": 999}\n', None),
    ('ukedge-exit: {"status": 256}\n', None),
    ('ukedge-exit: {"status": -1}\n', None),
    ('ukedge-exit: {"status": "0"}\n', None),
    ('ukedge-exit: {"status": true}\n', None),
    ('ukedge-exit: {"status": 1.0}\n', None),
    ('ukedge-exit: {"status": x}\n', None),
    ('ukedge-exit: {"status": 0} trailing\n', None),
    ('ukedge-exit: [{"status": 0}]\n', None),
    ("ukedge-exit: 0\n", None),
    ("app says ukedge-exit: nonsense\n", None),
    ('ukedge-exit:{"status": 0}\n', None),  # the prefix includes its space
    ("ukedge-exit: " + "[" * 5000 + "\n", None),  # nesting deeper than json's recursion limit
    ("ukedge-exit: " + "9" * 5000 + "\n", None),  # longer than int() takes
    # A malformed later line does not hide an earlier good one.
    ('ukedge-exit: {"status": 2}\nukedge-exit: {"status": "x"}\n', 2),
]


@pytest.mark.parametrize(("text", "expected"), CORPUS)
def test_corpus(text: str, expected: int | None) -> None:
    assert parse_exit_line(text) == expected


@pytest.mark.parametrize("status", [0, 1, 42, 127, 128, 137, 143, 255])
def test_formatted_line_reads_back(status: int) -> None:
    line = format_exit_line(status)
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_exit_line("app output\n" + line) == status


@pytest.mark.parametrize("status", [-1, 256, True, 1.0, "0"])
def test_format_refuses_what_is_not_a_status(status: object) -> None:
    with pytest.raises(ValueError, match="0 to 255"):
        format_exit_line(status)  # type: ignore[arg-type]


def test_read_exit_status_reads_the_tail_of_a_long_log(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("x" * 500_000 + '\nukedge-exit: {"status": 7}\r\n')
    assert read_exit_status(console) == 7
    assert read_exit_status(tmp_path / "missing.log") is None


def test_protocol_lines_are_the_exit_line_and_the_reset() -> None:
    assert is_protocol_line(format_exit_line(0).encode())
    assert is_protocol_line(b"reboot: Restarting system\r\n")
    assert not is_protocol_line(b"hello ukedge-exit: nothing\n")
    assert not is_protocol_line(b"[    1.2] reboot: Restarting system\n")


def test_held_is_a_whole_line() -> None:
    assert is_held("[    0.9] booted\r\nukedge-held\r\n")
    assert is_held("ukedge-held\n")
    assert not is_held("ukedge-held")  # not a line yet
    assert not is_held("app: ukedge-held\r\n")
    assert is_protocol_line(b"ukedge-held\r\n")
