"""Kernel profiles: kconfig fragments shipped in ``ukedge/kernel/profiles/<name>.config``.

A fragment is merged on top of ``make tinyconfig``. Besides kconfig lines (``CONFIG_X=y`` and
``# CONFIG_X is not set``), each comment line directly above an option says why the option is
there, and one ``# ukedge.cmdline: ...`` line gives the base kernel command line the profile
wants. Only the effective lines feed the cache key, so rewording a comment does not rebuild.

Architectures: ``<name>.config`` is arch-neutral (x86_64 is the default build); an optional
``<name>.<arch>.config`` (OCI architecture name, e.g. ``minimal.arm64.config``) is merged after
it for that architecture. A later line wins: the arch fragment adds its own drivers, turns off
(``# CONFIG_X is not set``) the options of the base that its architecture does not have, and its
``# ukedge.cmdline:`` line, when it has one, replaces the base's. Options shared by every
architecture therefore go in the base fragment, and only there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from ukedge.errors import KernelError

__all__ = ["Profile", "load_profile", "merge_profiles", "parse_profile", "profiles"]

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
    #: OCI architecture the profile was loaded for (``amd64``, ``arm64``).
    architecture: str = "amd64"

    def effective(self) -> str:
        """The lines that change the build, normalised (the cache-key input)."""
        return "\n".join(f"{k}={v}" for k, v in sorted(self.options.items())) + "\n"


def profiles() -> list[str]:
    """Names of the shipped profiles."""
    root = resources.files("ukedge.kernel").joinpath("profiles")
    return sorted(
        entry.name.removesuffix(".config")
        for entry in root.iterdir()
        if entry.name.endswith(".config") and entry.name.count(".") == 1
    )


def load_profile(name: str, architecture: str = "amd64") -> Profile:
    """Profile ``name`` for an OCI ``architecture``: its base fragment, then its arch fragment."""
    known = profiles()
    if name not in known:
        raise KernelError(f"unknown kernel profile {name!r}; known profiles: {', '.join(known)}")
    root = resources.files("ukedge.kernel").joinpath("profiles")
    base = parse_profile(name, root.joinpath(f"{name}.config").read_text())
    arch_file = root.joinpath(f"{name}.{architecture}.config")
    if not arch_file.is_file():
        return base
    return merge_profiles(
        base, parse_profile(name, arch_file.read_text(), base=False), architecture
    )


def merge_profiles(base: Profile, arch: Profile, architecture: str) -> Profile:
    """``arch`` merged after ``base``: its options override, its command line replaces."""
    return Profile(
        name=base.name,
        text=f"{base.text.rstrip()}\n\n{arch.text}",
        options={**base.options, **arch.options},
        cmdline=arch.cmdline or base.cmdline,
        architecture=architecture,
    )


def parse_profile(name: str, text: str, *, base: bool = True) -> Profile:
    """Parse fragment text; a malformed line or a repeated option is a :class:`KernelError`.

    An arch fragment (``base=False``) may leave the command line to the base fragment.
    """
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
    if cmdline is None and not base:
        cmdline = ""
    if cmdline is None:
        raise KernelError(f"profile {name} has no '{_CMDLINE} ...' line")
    return Profile(name=name, text=text, options=options, cmdline=cmdline)
