"""Kernel profiles: kconfig fragments shipped in ``ukedge/kernel/profiles/<name>.config``.

A fragment is merged on top of ``make tinyconfig``. Besides kconfig lines (``CONFIG_X=y`` and
``# CONFIG_X is not set``), each comment line directly above an option says why the option is
there, and one ``# ukedge.cmdline: ...`` line gives the base kernel command line the profile
wants. Only the effective lines feed the cache key, so rewording a comment does not rebuild.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from ukedge.errors import KernelError

__all__ = ["Profile", "load_profile", "profiles"]

_OPTION = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_CMDLINE = "# ukedge.cmdline:"


@dataclass(frozen=True)
class Profile:
    """A parsed fragment: what to ask kconfig for, and the command line to boot with."""

    name: str
    text: str
    #: option name -> wanted value (``"n"`` for ``# CONFIG_X is not set``)
    options: dict[str, str]
    cmdline: str

    def effective(self) -> str:
        """The lines that change the build, normalised (the cache-key input)."""
        return "\n".join(f"{k}={v}" for k, v in sorted(self.options.items())) + "\n"


def profiles() -> list[str]:
    """Names of the shipped profiles."""
    root = resources.files("ukedge.kernel").joinpath("profiles")
    return sorted(
        entry.name.removesuffix(".config")
        for entry in root.iterdir()
        if entry.name.endswith(".config")
    )


def load_profile(name: str) -> Profile:
    known = profiles()
    if name not in known:
        raise KernelError(f"unknown kernel profile {name!r}; known profiles: {', '.join(known)}")
    text = resources.files("ukedge.kernel").joinpath("profiles", f"{name}.config").read_text()
    return parse_profile(name, text)


def parse_profile(name: str, text: str) -> Profile:
    """Parse fragment text; a malformed line or a repeated option is a :class:`KernelError`."""
    options: dict[str, str] = {}
    cmdline: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"profile {name} line {number}"
        if line.startswith(_CMDLINE):
            if cmdline is not None:
                raise KernelError(f"{where}: a second '{_CMDLINE}' line")
            cmdline = " ".join(line[len(_CMDLINE) :].split())
            continue
        option = _OPTION.match(line)
        not_set = _NOT_SET.match(line)
        if option:
            key, value = option.group(1), option.group(2)
        elif not_set:
            key, value = not_set.group(1), "n"
        elif not line or line.startswith("#"):
            continue
        else:
            raise KernelError(f"{where}: not a kconfig line: {raw!r}")
        if key in options:
            raise KernelError(f"{where}: {key} is set twice")
        options[key] = value
    if cmdline is None:
        raise KernelError(f"profile {name} has no '{_CMDLINE} ...' line")
    return Profile(name=name, text=text, options=options, cmdline=cmdline)
