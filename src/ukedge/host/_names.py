"""Readable instance names (``quiet_lorenz``) for instances started without ``--name``."""

from __future__ import annotations

import re
import secrets

__all__ = ["NAME_PATTERN", "random_name"]

#: Names become directory names, hostnames and URL path segments: keep them tame.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}\Z")

_ADJECTIVES = (
    "agile",
    "bold",
    "brave",
    "calm",
    "clever",
    "eager",
    "fast",
    "gentle",
    "happy",
    "keen",
    "lucid",
    "nimble",
    "proud",
    "quiet",
    "rapid",
    "sharp",
    "steady",
    "swift",
    "tidy",
    "vivid",
)
_SCIENTISTS = (
    "babbage",
    "curie",
    "dijkstra",
    "euler",
    "feynman",
    "gauss",
    "hopper",
    "kepler",
    "knuth",
    "lamport",
    "liskov",
    "lorenz",
    "lovelace",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "wirth",
)


def random_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SCIENTISTS)}"
