"""Flag values every command group reads the same way, refused with the flag's name."""

from __future__ import annotations

from ukedge.errors import UsageError
from ukedge.units import parse_duration

__all__ = ["seconds"]


def seconds(flag: str, text: str | None) -> float | None:
    """A duration flag (``500ms``, ``10m``, ``1h``, ``30``) in seconds; ``None`` when not given."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
