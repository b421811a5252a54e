"""The desired state on disk: round trip, private mode, a crash while saving keeps the old
state, and an unreadable file is set aside rather than stopping the agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ukedge.host import RunRequest
from ukedge.host.link import DesiredInstance, DesiredState, DesiredStore


def state(generation: int, replicas: int = 1) -> DesiredState:
    return DesiredState(
        generation=generation,
        instances=[
            DesiredInstance(
                name=f"web-r{i}",
                deployment="web",
                replica=f"r{i}",
                revision=generation,
                request=RunRequest(image="app:1", env={"N": str(i)}, labels={"tier": "front"}),
            )
            for i in range(replicas)
        ],
        prepull=["app:2"],
    )


def test_round_trip_and_mode(tmp_path: Path) -> None:
    store = DesiredStore(tmp_path / "desired.json")
    assert store.load() is None
    store.save(state(3, replicas=2))
    assert DesiredStore(tmp_path / "desired.json").load() == state(3, replicas=2)
    assert (tmp_path / "desired.json").stat().st_mode & 0o777 == 0o600
    store.save(state(4))
    assert store.load() == state(4)
    assert [p.name for p in tmp_path.iterdir()] == ["desired.json"]  # no temporary left


_SAVE = """
import sys
from ukedge.host import RunRequest
from ukedge.host.link import DesiredInstance, DesiredState, DesiredStore
DesiredStore(__import__("pathlib").Path(sys.argv[1])).save(DesiredState(generation=9))
"""


@pytest.mark.parametrize("existing", [True, False])
def test_a_crash_while_saving_keeps_the_old_state(tmp_path: Path, existing: bool) -> None:
    path = tmp_path / "desired.json"
    if existing:
        DesiredStore(path).save(state(1))
    env = {**os.environ, "UKEDGE_CRASH_POINT": "link.desired.save"}
    proc = subprocess.run([sys.executable, "-c", _SAVE, str(path)], env=env, check=False)
    assert proc.returncode == -9  # killed at the crash point, after the fsync, before the rename
    assert DesiredStore(path).load() == (state(1) if existing else None)
    # The next save (the next heartbeat's answer) replaces it, temporary leftovers or not.
    subprocess.run([sys.executable, "-c", _SAVE, str(path)], check=True)
    assert DesiredStore(path).load() == DesiredState(generation=9)
    assert [p.name for p in tmp_path.iterdir()] == ["desired.json"]


def test_an_unreadable_file_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "desired.json"
    path.write_text('{"generation": -1}')
    assert DesiredStore(path).load() is None
    assert not path.exists()
    assert (tmp_path / "desired.json.bad").read_text() == '{"generation": -1}'
    assert "the controller will send the state again" in caplog.text
