"""Ukfile validation: every bad input gets its own error naming the file, the field and the
problem; good input gets the documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.build import Ukfile, load_ukfile, parse_duration
from ukedge.errors import UkfileError, UsageError

_BASE = """
[app]
name = "demo"
runtime = "python"
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "Ukfile").write_text(text)
    return tmp_path


def _error(tmp_path: Path, text: str) -> UkfileError:
    with pytest.raises(UkfileError) as info:
        load_ukfile(_write(tmp_path, text))
    return info.value


def test_minimal_python_ukfile_gets_defaults(tmp_path: Path) -> None:
    uk = load_ukfile(_write(tmp_path, _BASE))
    assert isinstance(uk, Ukfile)
    assert uk.app.name == "demo"
    assert uk.app.entrypoint is None
    assert uk.app.workdir == "/app"
    assert uk.resources.memory is None, "the builder picks enough to boot"
    assert uk.resources.memory_mib is None
    assert uk.resources.vcpus == 1
    assert uk.kernel.profile == "minimal"
    assert uk.files.include == ["**"]
    assert uk.files.dest == "/app"
    assert uk.ports == []
    assert uk.healthcheck is None


def test_full_ukfile(tmp_path: Path) -> None:
    uk = load_ukfile(
        _write(
            tmp_path,
            """
[app]
name = "svc"
runtime = "python"
entrypoint = "python3 -u /app/svc.py"
args = ["--fast"]
workdir = "/data"
[python]
requirements = ["idna==3.10"]
[files]
include = ["*.py"]
exclude = ["tests"]
[files.copy]
"conf/a.json" = "/etc/a.json"
[env]
MODE = "edge"
[resources]
memory = "128M"
vcpus = 2
[[ports]]
port = 8080
[[ports]]
port = 5353
protocol = "udp"
[healthcheck]
type = "http"
port = 8080
path = "/healthz"
interval = "250ms"
timeout = 2
start_period = "1m"
[kernel]
profile = "minimal"
[labels]
team = "edge"
""",
        )
    )
    assert uk.app.entrypoint == ["python3", "-u", "/app/svc.py"]
    assert uk.resources.memory_mib == 128
    assert [(p.port, p.protocol) for p in uk.ports] == [(8080, "tcp"), (5353, "udp")]
    assert uk.healthcheck is not None
    assert uk.healthcheck.interval_s == 0.25
    assert uk.healthcheck.timeout_s == 2.0
    assert uk.healthcheck.start_period_s == 60.0
    assert uk.files.copy_ == {"conf/a.json": "/etc/a.json"}
    assert uk.python is not None and uk.python.requirements == ["idna==3.10"]


def test_snapshot_and_hostname_default_to_ready_and_per_instance(tmp_path: Path) -> None:
    uk = load_ukfile(_write(tmp_path, _BASE))
    assert uk.app.snapshot == "ready" and uk.app.hostname is None
    fixed = _BASE.replace("[app]", "[app]\nsnapshot = 'pre-app'\nhostname = 'edge-1'")
    uk = load_ukfile(_write(tmp_path, fixed))
    assert uk.app.snapshot == "pre-app" and uk.app.hostname == "edge-1"


def test_ukfile_path_may_be_the_file(tmp_path: Path) -> None:
    _write(tmp_path, _BASE)
    assert load_ukfile(tmp_path / "Ukfile").app.name == "demo"


def test_missing_ukfile(tmp_path: Path) -> None:
    with pytest.raises(UkfileError, match="nowhere: does not exist"):
        load_ukfile(tmp_path / "nowhere")
    with pytest.raises(UkfileError, match="no Ukfile in"):
        load_ukfile(tmp_path)


def test_ukfile_error_is_a_usage_error(tmp_path: Path) -> None:
    err = _error(tmp_path, "[app]\nname = 'x'\n")
    assert isinstance(err, UsageError)
    assert err.exit_code == 2


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    err = _error(tmp_path, '[app]\nname = "x"\nruntime = python\n')
    assert err.field is None
    assert err.path == str(tmp_path / "Ukfile")
    assert "invalid TOML" in err.problem
    assert "line 3" in err.problem and "column" in err.problem


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "Ukfile").write_bytes(b"[app]\nname = '\xff'\n")
    with pytest.raises(UkfileError, match="not UTF-8"):
        load_ukfile(tmp_path)


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("[app]\nruntime = 'python'\n", "app.name", "required but missing"),
        ("[app]\nname = 'x'\n", "app.runtime", "required but missing"),
        ("", "app", "required but missing"),
        (_BASE.replace("python", "java"), "app.runtime", "unknown runtime 'java'"),
        (_BASE.replace('"demo"', '"Demo App"'), "app.name", "invalid name 'Demo App'"),
        (_BASE + "entrypoint = []\n", "app.entrypoint", "must name a program"),
        (_BASE + "workdir = 'app'\n", "app.workdir", "absolute path"),
        (_BASE + "args = 'x'\n", "app.args", "valid list"),
        (_BASE + "colour = 'red'\n", "app.colour", "unknown key"),
        (_BASE + "[resources]\nmemory = '64Q'\n", "resources.memory", "invalid size '64Q'"),
        (_BASE + "[resources]\nmemory = '8M'\n", "resources.memory", "out of range"),
        (_BASE + "[resources]\nmemory = '1.5M'\n", "resources.memory", "whole number of MiB"),
        (_BASE + "[resources]\nvcpus = 0\n", "resources.vcpus", "greater than or equal to 1"),
        (_BASE + "[resources]\nvcpus = '2'\n", "resources.vcpus", "valid integer"),
        (_BASE + "[[ports]]\nport = 70000\n", "ports[0].port", "less than or equal to 65535"),
        (
            _BASE + "[[ports]]\nport = 80\nprotocol = 'sctp'\n",
            "ports[0].protocol",
            "'tcp' or 'udp'",
        ),
        (_BASE + "[[ports]]\nport = 80\n[[ports]]\nport = 80\n", "ports", "declared twice"),
        (_BASE + "[env]\nPORT = 8080\n", "env.PORT", "valid string"),
        (_BASE + "[env]\n'BAD-NAME' = 'x'\n", "env", "not a valid environment variable name"),
        (_BASE + "[labels]\nn = 1\n", "labels.n", "valid string"),
        (
            _BASE + "[[ports]]\nport = 80\n[healthcheck]\ntype = 'grpc'\nport = 80\n",
            "healthcheck.type",
            "'tcp' or 'http'",
        ),
        (
            _BASE + "[[ports]]\nport = 80\n[healthcheck]\ntype = 'http'\nport = 80\npath = 'x'\n",
            "healthcheck.path",
            "must start with '/'",
        ),
        (
            _BASE
            + "[[ports]]\nport = 80\n[healthcheck]\ntype = 'tcp'\nport = 80\ninterval = 'soon'\n",
            "healthcheck.interval",
            "invalid duration 'soon'",
        ),
        (
            _BASE + "[[ports]]\nport = 80\n[healthcheck]\ntype = 'tcp'\nport = 80\ntimeout = 0\n",
            "healthcheck.timeout",
            "greater than 0",
        ),
        (
            _BASE
            + "[[ports]]\nport = 80\n[healthcheck]\ntype = 'tcp'\nport = 80\ninterval_s = 1\n",
            "healthcheck.interval_s",
            "unknown key",
        ),
        (_BASE + "[[ports]]\nport = '80'\n", "ports[0].port", "valid integer"),
        (
            _BASE + "[healthcheck]\ntype = 'tcp'\nport = 81\n",
            "healthcheck.port",
            "port 81 is not declared",
        ),
        (_BASE + "[kernel]\nprofile = 'Big One'\n", "kernel.profile", "invalid profile name"),
        (_BASE + "[files]\ninclude = ['/etc/passwd']\n", "files.include", "relative"),
        (_BASE + "[files]\ndest = 'app'\n", "files.dest", "absolute path"),
        (_BASE + "[files.copy]\n'../secret' = '/x'\n", "files.copy", "inside the build directory"),
        (_BASE + "[files.copy]\n'my-init' = '/init'\n", "files.copy", "init owns or mounts"),
        (_BASE + "[files]\ndest = '/tmp/app'\n", "files.dest", "inside /tmp"),
        (_BASE + "[files]\ndest = '/'\n", "files.dest", "use a directory such as /app"),
        (_BASE + "[static]\nsources = ['a.c']\n", "static", "only valid with runtime = 'static'"),
        (
            "[app]\nname = 'x'\nruntime = 'static'\n",
            "static",
            "needs a [static] table",
        ),
        (
            "[app]\nname = 'x'\nruntime = 'static'\n[static]\n",
            "static",
            "needs 'sources",
        ),
        (
            "[app]\nname = 'x'\nruntime = 'static'\n[static]\nsources = ['a.c']\nbinary = 'a'\n",
            "static",
            "not both",
        ),
        (
            "[app]\nname = 'x'\nruntime = 'static'\n[static]\nbinary = '../a'\n",
            "static.binary",
            "inside the build directory",
        ),
        (
            "[app]\nname = 'x'\nruntime = 'static'\n[python]\n[static]\nbinary = 'a'\n",
            "python",
            "only valid with runtime = 'python'",
        ),
        (
            _BASE + "[python]\nrequirements = ['a']\nrequirements_file = 'r.txt'\n",
            "python",
            "not both",
        ),
        (_BASE + "[python]\nrequirement = ['a']\n", "python.requirement", "unknown key"),
        (_BASE + "[build]\n", "build", "unknown key"),
        (_BASE.replace("[app]", "[app]\nsnapshot = 'later'"), "app.snapshot", "'ready'"),
        (_BASE.replace("[app]", "[app]\nhostname = 'a b'"), "app.hostname", "invalid hostname"),
        (_BASE.replace("[app]", "[app]\nhostname = 'x_y'"), "app.hostname", "invalid hostname"),
    ],
)
def test_bad_ukfile_names_field_and_problem(
    tmp_path: Path, text: str, field: str, problem: str
) -> None:
    err = _error(tmp_path, text)
    assert err.path == str(tmp_path / "Ukfile")
    assert err.field == field, str(err)
    assert problem in err.problem, str(err)
    assert str(err).startswith(f"{tmp_path / 'Ukfile'}: {field}: ")


def test_several_problems_are_counted(tmp_path: Path) -> None:
    err = _error(tmp_path, _BASE + "[resources]\nmemory = 'x'\nvcpus = 0\n")
    assert "and 1 more problem" in err.problem


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1.5", 1.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "1d", "-1s", "1 s s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
