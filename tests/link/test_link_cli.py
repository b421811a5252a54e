"""``ukedge host serve --controller/--join-token`` refuses what cannot work, before serving,
with a message saying what to do and a non-zero exit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kit.host import ukedge_cmd
from ukedge.host.link import Enrolment
from ukedge.host.link._enrolment import FILE_NAME
from ukedge.host.link._files import write_private

TOKEN = f"UKJ1.{'ab' * 32}.tok12345.{'s' * 24}"


def _serve(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ukedge_cmd(), "host", "serve", "--data", str(data), "--addr", "", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--join-token", TOKEN], "--join-token needs --controller"),
        (["--controller", "https://127.0.0.1:9", "--join-token", "bad"], "invalid join token"),
        (["--controller", "http://127.0.0.1:9", "--join-token", TOKEN], "expected https://"),
        (["--controller", "https://127.0.0.1:9"], "pass --join-token"),
    ],
)
def test_bad_enrolment_flags_fail_before_serving(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = _serve(tmp_path / "agent", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "agent" / FILE_NAME).exists()


def test_another_controller_while_enrolled_fails_saying_how_to_re_enrol(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    data.mkdir(mode=0o700)
    record = Enrolment(controller="https://ctl:7700", node_id="n-9", credential="c", cert="PEM")
    write_private(data / FILE_NAME, record.model_dump_json(), crash_name="test")
    proc = _serve(data, "--controller", "https://other:7700")
    assert proc.returncode != 0
    assert "enrolled with the controller https://ctl:7700" in proc.stderr
    assert "ukedge node rm n-9" in proc.stderr
    assert Enrolment.model_validate_json((data / FILE_NAME).read_text()) == record
