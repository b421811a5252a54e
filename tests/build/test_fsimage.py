"""A runtime layer as an erofs image plus a boot archive (the shared-runtime boot path).

The erofs image is checked by reading it back with fsck.erofs (erofs-utils, which the Makefile
installs), independently of the writer; the boot archive by the test kit's own cpio reader.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from kit.cpio import cpio_members
from ukedge.build import read_cpio, runtime_boot_archive, runtime_erofs, runtime_mounts
from ukedge.errors import BuildError
from ukedge.guest import CpioArchive


def _runtime(tmp_path: Path, *, python: bool = True) -> Path:
    archive = CpioArchive()
    archive.add_file("init", b"\x7fELF init", 0o755)
    archive.add_char_device("dev/console", 5, 1)
    for d in ("proc", "sys", "tmp", "ukedge"):
        archive.add_dir(d)
    if python:
        archive.add_file("lib/x86_64-linux-gnu/libc.so.6", b"libc" * 1000, 0o755)
        archive.add_symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld.so")
        archive.add_file("usr/bin/python3.11", b"python" * 5000, 0o755)
        archive.add_symlink("usr/bin/python3", "python3.11")
        archive.add_file("usr/lib/python311.zip", b"zip" * 3000)
        archive.add_file("usr/lib/python3.11/os.pyc", b"pyc")
    path = tmp_path / ("runtime.cpio" if python else "static.cpio")
    archive.write_to(path)
    return path


def test_read_cpio_reads_what_the_writer_wrote(tmp_path: Path) -> None:
    members = {m.path: m for m in read_cpio(_runtime(tmp_path))}
    assert members["usr/bin/python3.11"].data == b"python" * 5000
    assert stat.S_IMODE(members["usr/bin/python3.11"].mode) == 0o755
    assert members["usr/bin/python3"].data == b"python3.11"
    assert stat.S_ISLNK(members["usr/bin/python3"].mode)
    assert members["dev/console"].rdev == (5, 1)


def test_read_cpio_refuses_what_is_not_newc(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cpio"
    bad.write_bytes(b"not an archive at all, not even close" * 4)
    with pytest.raises(BuildError, match="no newc cpio header"):
        read_cpio(bad)


@pytest.mark.parametrize(
    ("others", "mounts"),
    [
        # The app is elsewhere: /lib and /usr come whole from the image.
        (["app/main.py", "/ukedge/launch"], ("/lib", "/usr")),
        # The app's packages go under /usr/local: /usr splits, /usr/local stays in RAM.
        (
            ["app/main.py", "usr/local/lib/python3.11/site-packages/x.py"],
            ("/lib", "/usr/bin", "/usr/lib"),
        ),
        # A layer that adds a file right inside /usr/lib keeps /usr/lib's own files in RAM too.
        (["usr/lib/extra.so"], ("/lib", "/usr/bin", "/usr/lib/python3.11")),
    ],
)
def test_mounts_are_the_highest_directories_only_the_runtime_fills(
    tmp_path: Path, others: list[str], mounts: tuple[str, ...]
) -> None:
    assert runtime_mounts(read_cpio(_runtime(tmp_path)), others) == mounts


def test_a_static_runtime_has_nothing_worth_an_image(tmp_path: Path) -> None:
    assert runtime_mounts(read_cpio(_runtime(tmp_path, python=False)), ["app/hello"]) == ()


def test_boot_archive_keeps_everything_outside_the_mounts(tmp_path: Path) -> None:
    members = read_cpio(_runtime(tmp_path))
    mounts = runtime_mounts(members, ["app/main.py"])
    runtime_boot_archive(members, mounts, tmp_path / "boot.cpio")
    boot = cpio_members((tmp_path / "boot.cpio").read_bytes())
    assert set(boot) == {
        "init",
        "dev",
        "dev/console",
        "proc",
        "sys",
        "tmp",
        "ukedge",
        "lib",  # the mount points stay, empty
        "usr",
        "lib64",
        "lib64/ld-linux-x86-64.so.2",
    }
    assert boot["init"][1] == b"\x7fELF init"
    assert boot["dev/console"][2:] == (5, 1)


def _extract(image: Path, dest: Path) -> None:
    subprocess.run(["fsck.erofs", f"--extract={dest}", str(image)], check=True, capture_output=True)


def test_erofs_image_holds_the_layer_and_is_reproducible(tmp_path: Path) -> None:
    members = read_cpio(_runtime(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    size = runtime_erofs(members, tmp_path / "a" / "rt.erofs")
    runtime_erofs(list(reversed(members)), tmp_path / "b" / "rt.erofs")
    image = tmp_path / "a" / "rt.erofs"
    assert size == image.stat().st_size
    assert size % (2 << 20) == 0
    assert image.read_bytes() == (tmp_path / "b" / "rt.erofs").read_bytes()
    _extract(image, tmp_path / "x")
    out = tmp_path / "x"
    assert (out / "usr/bin/python3.11").read_bytes() == b"python" * 5000
    assert (out / "usr/bin/python3.11").stat().st_mode & 0o777 == 0o755
    assert (out / "usr/lib/python311.zip").stat().st_mode & 0o777 == 0o644
    assert (out / "usr/bin/python3").readlink() == Path("python3.11")
    assert not (out / "dev/console").exists()  # the guest's /dev is devtmpfs
    assert not list(tmp_path.glob("a/.erofs-*"))  # its scratch tree is gone
