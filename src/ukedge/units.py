"""Sizes as people write them (``64M``, ``1.5GiB``) and as machines store them (bytes)."""

from __future__ import annotations

import re

from ukedge.errors import UsageError

__all__ = ["format_size", "parse_duration", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_size(text: str | int, *, default_unit: str = "") -> int:
    """Bytes in ``text``; K/M/G/T are binary (as QEMU's ``-m`` reads them), with or without iB."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"invalid size {text!r}: expected a number with K, M, G or T (e.g. 64M)")
    unit = (m.group(2) or default_unit).upper()
    return int(float(m.group(1)) * _FACTORS[unit])


def format_size(n: float) -> str:
    """Short human form, e.g. ``1.9 MB``; decimal units, as ``docker images`` prints them."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def parse_duration(value: str | float) -> float:
    """Seconds in ``"500ms"``, ``"2s"``, ``"1m"`` or a bare number of seconds.

    Raises ``ValueError`` (pydantic validators turn it into a field error; the CLI into a
    usage error).
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 2s or 1.5")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 2s, 1m or 1.5")
        seconds = float(m.group(1)) * _DURATION_FACTORS[m.group(2)]
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds
