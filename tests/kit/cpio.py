"""Reading newc cpio archives back in tests (what Linux does with an initramfs), independently
of the writer under test; concatenated archives are read one after another like the kernel."""

from __future__ import annotations


def cpio_members(data: bytes) -> dict[str, tuple[int, bytes, int, int]]:
    """Path -> (mode, data, rdevmajor, rdevminor) of every member, later archives winning."""
    out: dict[str, tuple[int, bytes, int, int]] = {}
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] == b"\0\0\0\0":  # padding between concatenated archives
            pos += 4
            continue
        assert data[pos : pos + 6] == b"070701", f"no newc header at offset {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        pos = body + filesize + (-filesize % 4)
        if name != "TRAILER!!!":
            out[name] = (fields[1], data[body : body + filesize], fields[9], fields[10])
    return out
