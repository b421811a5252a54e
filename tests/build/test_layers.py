"""Reproducible layers: the same tree gives the same cpio and gzip bytes whatever the file times,
owners or creation order; the real cpio tool reads what we write; the layer cache reuses work."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ukedge.build._layers import LayerCache, LayerFile, gzip_layer, initrd_layer
from ukedge.guest import CpioArchive
from ukedge.image import digest_file, mediatypes


def _make_tree(root: Path, mtime: int) -> None:
    for rel, data in [("bin/app", b"\x7fELF..."), ("etc/conf.json", b"{}"), ("a/b/c.txt", b"c")]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "bin/app").chmod(0o700)
    (root / "etc/conf.json").chmod(0o600)
    (root / "link").symlink_to("etc/conf.json")
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def _layer(tree: Path, dest: Path) -> LayerFile:
    archive = CpioArchive()
    archive.add_tree(tree, "/app")
    archive.add_char_device("dev/console", 5, 1)
    return initrd_layer(archive, dest, mediatypes.INITRD_GZIP)


def test_same_tree_same_bytes_whatever_the_mtimes(tmp_path: Path) -> None:
    _make_tree(tmp_path / "one", 1_000_000)
    _make_tree(tmp_path / "two", 2_000_000_000)
    a = _layer(tmp_path / "one", tmp_path / "one.gz")
    b = _layer(tmp_path / "two", tmp_path / "two.gz")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.digest == b.digest == digest_file(a.path)[0]
    assert a.uncompressed_size == len(gzip.decompress(a.path.read_bytes()))
    header = a.path.read_bytes()[:10]
    assert header[4:8] == b"\0\0\0\0", "gzip mtime must be zero"
    assert header[3] & 0x08 == 0, "gzip header must carry no file name"


def test_source_date_epoch_sets_entry_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_tree(tmp_path / "t", 5)
    zero = _layer(tmp_path / "t", tmp_path / "zero.gz")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    later = _layer(tmp_path / "t", tmp_path / "later.gz")
    assert zero.digest != later.digest
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert _layer(tmp_path / "t", tmp_path / "again.gz").digest == later.digest


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio (Debian package cpio)")
def test_cpio_tool_reads_the_archive(tmp_path: Path) -> None:
    _make_tree(tmp_path / "t", 5)
    layer = _layer(tmp_path / "t", tmp_path / "l.gz")
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"],
        input=gzip.decompress(layer.path.read_bytes()),
        capture_output=True,
        check=True,
    ).stdout.decode()
    lines = listing.splitlines()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in lines]
    assert names == sorted(names)
    assert "app/bin/app" in names and "app/link" in names and "dev/console" in names
    entry = {line.split()[-1]: line for line in lines if "->" not in line}
    assert entry["app/bin/app"].startswith("-rwxr-xr-x")
    assert entry["app/etc/conf.json"].startswith("-rw-r--r--")
    assert entry["dev/console"].startswith("crw-------")
    assert all(" root " in line for line in lines)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames"],
        input=gzip.decompress(layer.path.read_bytes()),
        cwd=out,
        check=True,
        capture_output=True,
    )
    assert (out / "app/etc/conf.json").read_bytes() == b"{}"
    assert str(Path(out / "app/link").readlink()) == "etc/conf.json"


def test_gzip_layer_of_a_kernel(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(os.urandom(1000) * 50)
    layer = gzip_layer(kernel, tmp_path / "k.gz", mediatypes.KERNEL_GZIP)
    assert gzip.decompress(layer.path.read_bytes()) == kernel.read_bytes()
    assert layer.uncompressed_size == 50_000
    assert layer.media_type == mediatypes.KERNEL_GZIP


def test_layer_cache_builds_once(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")
    source = tmp_path / "blob"
    source.write_bytes(b"kernel" * 1000)
    calls = []

    def build(dest: Path) -> LayerFile:
        calls.append(dest)
        return gzip_layer(source, dest, mediatypes.KERNEL_GZIP)

    first, cached = cache.get_or_build("kernel", "k" * 64, build)
    assert not cached
    second, cached = cache.get_or_build("kernel", "k" * 64, build)
    assert cached
    assert len(calls) == 1
    assert second == first
    assert first.path.parent == tmp_path / "cache"
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    other, cached = cache.get_or_build("kernel", "j" * 64, build)
    assert not cached and len(calls) == 2 and other.digest == first.digest


def test_layer_cache_ignores_a_damaged_entry(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 1000)

    def build(dest: Path) -> LayerFile:
        return gzip_layer(source, dest, mediatypes.KERNEL_GZIP)

    layer, _ = cache.get_or_build("kernel", "k" * 64, build)
    layer.path.write_bytes(b"truncated")
    assert cache.get("kernel", "k" * 64) is None
    rebuilt, cached = cache.get_or_build("kernel", "k" * 64, build)
    assert not cached and rebuilt.digest == layer.digest


def test_failed_build_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")

    def build(dest: Path) -> LayerFile:
        dest.write_bytes(b"half")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("runtime", "r" * 64, build)
    assert list((tmp_path / "cache").iterdir()) == []
