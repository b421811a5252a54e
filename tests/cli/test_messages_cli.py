"""Messages for what users try first (issue 16.5): Docker commands a unikernel has no use for, a
reference whose tag was assumed, help that reads right, the doctor's accelerator line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ukedge.cli._console import print_image_record
from ukedge.cli.doctor import _gist
from ukedge.image import host_platform


@pytest.mark.parametrize("command", ["exec", "attach"])
def test_exec_and_attach_say_what_to_use_instead(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ukedge.cli.main", command, "web", "sh"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "No such command" not in done.stderr and "╭" not in done.stderr
    assert f"`ukedge {command}`" in done.stderr and "ukedge logs -f NAME" in done.stderr


_DOC = {"ref": "sensor-agg:latest", "digest": "sha256:" + "ab12" * 16}


def test_inspect_says_which_tag_it_assumed(capsys: pytest.CaptureFixture[str]) -> None:
    print_image_record(_DOC, "sensor-agg")
    captured = capsys.readouterr()
    assert "no tag given: showing sensor-agg:latest" in captured.err
    assert '"ref": "sensor-agg:latest"' in captured.out


@pytest.mark.parametrize(
    "asked", ["sensor-agg:latest", "ab12ab", "sensor-agg@sha256:" + "ab12" * 16]
)
def test_inspect_by_tag_digest_or_id_assumes_nothing(
    asked: str, capsys: pytest.CaptureFixture[str]
) -> None:
    print_image_record(_DOC, asked)
    assert capsys.readouterr().err == ""


def _help(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ukedge.cli.main", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("args", [(), ("ps",), ("image", "prewarm"), ("hub", "user", "add")])
def test_flags_show_no_value_placeholder(args: tuple[str, ...]) -> None:
    text = _help(*args)
    assert "--help" in text and "<bool>" not in text


def test_agent_help_keeps_its_placeholders() -> None:
    text = _help("host", "serve")
    assert "<data>/token" in text and "<data>/agent.sock" in text


def test_doctor_keeps_the_gist_of_a_long_accelerator_reason() -> None:
    assertion = "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: " * 2
    gist = _gist(f"a KVM test VM failed: {assertion}")
    assert gist == "a KVM test VM failed; QEMU's message in `ukedge doctor --json`"
    assert _gist("/dev/kvm does not exist") == "/dev/kvm does not exist"


def test_doctor_lists_the_platforms_this_host_runs_and_each_kernels_key() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ukedge.cli.main", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 0, done.stderr
    [platforms] = [line for line in done.stdout.splitlines() if line.startswith("platforms")]
    assert f"{host_platform()}: " in platforms  # this machine's own qemu-system-*
    [kernels] = [line for line in done.stdout.splitlines() if line.startswith("kernels")]
    # The cache key shows (square brackets were taken for rich markup and vanished).
    if "none built" not in kernels:
        assert "(" in kernels and ")" in kernels
