"""Attack-surface proxies: what an artefact holds and what its kernel or sandbox lets run.

None of these is a security verdict; each is a count someone can check by hand: regular files
and executables (ELF programs and libraries, and scripts marked executable) in the artefact, the
options a kernel was built with (``=y`` and ``=m``; a module is code that can be loaded), and
the system calls a container's default seccomp profile allows.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

__all__ = ["du", "kernel_options", "seccomp_allowed", "tree_counts"]


def tree_counts(root: Path) -> dict[str, int]:
    """Regular files and executables under ``root`` (symbolic links not followed)."""
    files = executables = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            files += 1
            if st.st_mode & 0o111:
                executables += 1
                continue
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    executables += 1
    return {"files": files, "executables": executables}


def du(root: Path) -> int:
    """Bytes the tree's regular files hold (apparent size, hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            st = (Path(dirpath) / name).lstat()
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def kernel_options(config: Path) -> dict[str, int]:
    """Options set in a kernel ``.config``: built in (``=y``), as modules (``=m``), and all
    that are set to anything."""
    built_in = modules = other = 0
    for line in config.read_text().splitlines():
        if not line.startswith("CONFIG_"):
            continue
        value = line.split("=", 1)[1]
        if value == "y":
            built_in += 1
        elif value == "m":
            modules += 1
        else:
            other += 1
    return {"built_in": built_in, "modules": modules, "enabled": built_in + modules}


def seccomp_allowed(profile: Path, arch: str = "amd64") -> dict[str, int]:
    """System calls a seccomp profile (containers' JSON format) allows: unconditionally, and
    counting those allowed only with a capability the default container lacks or with argument
    filters."""
    data = json.loads(profile.read_text())
    unconditional: set[str] = set()
    any_rule: set[str] = set()
    for rule in data.get("syscalls", []):
        if rule.get("action") != "SCMP_ACT_ALLOW":
            continue
        includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        names = set(rule.get("names", []))
        any_rule |= names
        if not includes.get("caps") and not rule.get("args") and not excludes.get("caps"):
            unconditional |= names
    return {"unconditional": len(unconditional), "with_conditions": len(any_rule)}
