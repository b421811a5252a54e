"""The repository's example images (``examples/hello-c``, ``examples/sensor-agg``), built once per
session into a shared store, and a ``UKEDGE_HOME`` whose store is that one for ``ukedge``
subprocesses. Registered once, in ``tests/conftest.py``, so every directory shares one build.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.host import ukedge_cmd
from ukedge.build import build_image
from ukedge.image import ImageStore, parse_platform

__all__ = ["EXAMPLES", "arm64_example_store", "cli_home", "example_store"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def example_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("example-store")
    store = ImageStore(root)
    build_image(EXAMPLES / "hello-c", ["hello-c:1"], store=store)
    build_image(EXAMPLES / "sensor-agg", ["sensor-agg:1"], store=store)
    return root


@pytest.fixture(scope="session")
def arm64_example_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same two examples built for linux/arm64 (cross-built; one arm64 kernel build per
    machine, cached), under the same names in a store of their own."""
    root = tmp_path_factory.mktemp("arm64-example-store")
    store = ImageStore(root)
    arm64 = parse_platform("linux/arm64")
    build_image(EXAMPLES / "hello-c", ["hello-c:1"], store=store, platform=arm64)
    build_image(EXAMPLES / "sensor-agg", ["sensor-agg:1"], store=store, platform=arm64)
    return root


@pytest.fixture
def cli_home(example_store: Path, ukedge_home: Path) -> Iterator[Path]:
    """A UKEDGE_HOME whose store is the session's example store, for `ukedge` subprocesses."""
    (ukedge_home / "store").symlink_to(example_store)
    yield ukedge_home
    subprocess.run(
        [*ukedge_cmd(), "rm", "-f", *_all_ids()], capture_output=True, env=os.environ.copy()
    )


def _all_ids() -> list[str]:
    out = subprocess.run([*ukedge_cmd(), "ps", "-aq"], capture_output=True, text=True)
    return out.stdout.split()
