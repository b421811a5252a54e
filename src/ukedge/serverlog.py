"""Logging of the long-running servers (hub, host agent): one JSON object per line, or text.

Library code only logs (``logging.getLogger(__name__)``); the server entry points call
:func:`configure` once, so both servers write the same structured lines a log shipper expects.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Literal

__all__ = ["JsonFormatter", "configure"]

_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(log_format: Literal["json", "text"], level: int = logging.INFO) -> None:
    """Send ukedge's loggers to stderr in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("ukedge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
