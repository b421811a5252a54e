"""Sizes as people write them (``64M``, ``1.5GiB``) and as machines store them (bytes)."""

from __future__ import annotations

import re

from ukedge.errors import UsageError

__all__ = ["format_size", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


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
