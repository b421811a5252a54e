"""Just enough of an ELF reader to tell a static executable from a dynamic one, and to list the
shared libraries a dynamic one needs.

Pure Python on purpose: the builder must decide whether a binary can run in a guest that has no
dynamic loader (``static`` runtime), and which libraries to copy into the ``python`` runtime, on
any host, without depending on ``file``, ``readelf`` or on running ``ldd`` (which executes the
binary's loader). Only 64-bit little-endian files of the guest's machine (x86-64 or AArch64)
are accepted: a binary of the other architecture would fail at boot with a bare "Exec format
error", so the builder names the mismatch instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ukedge.errors import BuildError

__all__ = ["ElfInfo", "NotElfError", "elf_machine", "read_elf"]

_PT_LOAD = 1
_PT_DYNAMIC = 2
_PT_INTERP = 3
_DT_NULL = 0
_DT_NEEDED = 1
_DT_STRTAB = 5
_DT_SONAME = 14
_DT_RUNPATH = 29
_ET_EXEC = 2
_ET_DYN = 3
#: ELF ``e_machine`` of each machine a guest can be (``Platform.machine``).
_EM_MACHINES = {"x86_64": 62, "aarch64": 183}


class NotElfError(BuildError):
    """The file is not a 64-bit little-endian ELF file of the expected machine."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class ElfInfo:
    """What the builder needs to know about one ELF file."""

    path: Path
    type: str  # "exec", "dyn" (shared object or PIE) or "other"
    interpreter: str | None
    needed: tuple[str, ...]
    soname: str | None
    runpath: str | None
    has_dynamic: bool

    @property
    def is_static(self) -> bool:
        """No loader and no shared libraries: it runs on a bare kernel (static-pie included)."""
        return self.interpreter is None and not self.needed


def elf_machine(path: Path) -> str | None:
    """The machine name (``x86_64``, ``aarch64``) of a 64-bit ELF file, None if another."""
    try:
        with path.open("rb") as f:
            head = f.read(20)
    except OSError as exc:
        raise BuildError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    (e_machine,) = struct.unpack_from("<H", head, 18)
    return next((m for m, em in _EM_MACHINES.items() if em == e_machine), None)


def read_elf(path: Path, machine: str = "x86_64") -> ElfInfo:
    """Parse the header, program headers and dynamic section of ``path``, an ELF file for
    ``machine`` (``x86_64``, ``aarch64``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BuildError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if data[:4] != b"\x7fELF":
        raise NotElfError(path, "not an ELF executable (no ELF magic)")
    if len(data) < 64:
        raise NotElfError(path, "truncated ELF header")
    if data[4] != 2 or data[5] != 1:
        raise NotElfError(path, f"not a 64-bit little-endian ELF file (the guest is {machine})")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != _EM_MACHINES[machine]:
        found = next((m for m, em in _EM_MACHINES.items() if em == e_machine), None)
        what = f"an {found} binary" if found else f"for ELF machine {e_machine}"
        raise NotElfError(
            path,
            f"{what}, but the image is for {machine} (ELF machine {_EM_MACHINES[machine]}): "
            f"build it for {machine} (a cross compiler: {machine}-linux-gnu-gcc -static)",
        )
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    segments: list[tuple[int, int, int, int, int]] = []  # type, offset, vaddr, filesz, memsz
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        if off + 56 > len(data):
            raise NotElfError(path, "truncated program header table")
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, off
        )
        segments.append((p_type, p_offset, p_vaddr, p_filesz, p_memsz))

    interpreter = None
    dynamic: tuple[int, int] | None = None
    for p_type, p_offset, _vaddr, p_filesz, _memsz in segments:
        if p_type == _PT_INTERP:
            interpreter = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode()
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)

    needed: list[str] = []
    soname = runpath = None
    if dynamic is not None:
        entries: list[tuple[int, int]] = []
        offset, size = dynamic
        for pos in range(offset, min(offset + size, len(data) - 15), 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == _DT_NULL:
                break
            entries.append((tag, val))
        strtab_addr = next((v for t, v in entries if t == _DT_STRTAB), None)
        if strtab_addr is not None:
            strtab = _vaddr_to_offset(segments, strtab_addr)
            if strtab is None:
                raise NotElfError(path, "dynamic string table is outside every loaded segment")

            def string(index: int) -> str:
                start = strtab + index
                end = data.index(b"\0", start)
                return data[start:end].decode()

            for tag, val in entries:
                if tag == _DT_NEEDED:
                    needed.append(string(val))
                elif tag == _DT_SONAME:
                    soname = string(val)
                elif tag == _DT_RUNPATH:
                    runpath = string(val)
    kind = {_ET_EXEC: "exec", _ET_DYN: "dyn"}.get(e_type, "other")
    return ElfInfo(path, kind, interpreter, tuple(needed), soname, runpath, dynamic is not None)


def _vaddr_to_offset(segments: list[tuple[int, int, int, int, int]], vaddr: int) -> int | None:
    for p_type, p_offset, p_vaddr, p_filesz, _memsz in segments:
        if p_type == _PT_LOAD and p_vaddr <= vaddr < p_vaddr + p_filesz:
            return p_offset + (vaddr - p_vaddr)
    return None
