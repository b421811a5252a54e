"""Hand-made wheels for offline pip tests (the real pip installs them from a local directory)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def make_wheel(
    where: Path, name: str, tag: str, files: dict[str, bytes], purelib: bool = True
) -> Path:
    dist = f"{name}-1.0.dist-info"
    content = dict(files)
    content[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
    content[f"{dist}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {str(purelib).lower()}\n"
        f"Tag: {tag}\n"
    ).encode()
    record = []
    for path, data in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    content[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(where / f"{name}-1.0-{tag}.whl", "w") as zf:
        for path, data in content.items():
            zf.writestr(path, data)
    return where / f"{name}-1.0-{tag}.whl"
