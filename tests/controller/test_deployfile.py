"""Deployment files and deploy flags become one DeploymentSpec; every mistake names where it was
made (the file and field, or the flag) and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.controller import DeploymentSpec, deployment_spec, load_deployment_file
from ukedge.errors import DeploymentFileError, UsageError

FULL = """\
name = "sensor-agg"
image = "hub.local:5000/sensor-agg:1"
replicas = 3
memory_mib = "64M"
vcpus = 1
args = ["--window", "10"]
env = { LEVEL = "info" }
ports = ["18080:8080", { host_port = 19090, guest_port = 9090, protocol = "udp" }]
restart = "on-failure:3"
on_demand = false
autonomy_s = "10m"

[placement]
selector = ["zone=a"]
architectures = ["x86_64"]
spread_by = "zone"

[strategy]
max_surge = 2
max_unavailable = 1
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.toml"
    path.write_text(text)
    return path


def test_a_full_file_reads_the_command_line_forms(tmp_path: Path) -> None:
    spec = load_deployment_file(_write(tmp_path, FULL))
    assert spec.model_dump(mode="json") == {
        "name": "sensor-agg",
        "image": "hub.local:5000/sensor-agg:1",
        "replicas": 3,
        "mode": "replicated",
        "memory_mib": 64,
        "vcpus": 1,
        "args": ["--window", "10"],
        "env": {"LEVEL": "info"},
        "ports": [
            {"host_ip": "127.0.0.1", "host_port": 18080, "guest_port": 8080, "protocol": "tcp"},
            {"host_ip": "127.0.0.1", "host_port": 19090, "guest_port": 9090, "protocol": "udp"},
        ],
        "restart": {"name": "on-failure", "max_retries": 3},
        "on_demand": False,
        "placement": {"selector": {"zone": "a"}, "architectures": ["x86_64"], "spread_by": "zone"},
        "strategy": {"max_surge": 2, "max_unavailable": 1},
        "autonomy_s": 600.0,
        "require_signature": False,
    }


def test_the_models_own_forms_read_the_same(tmp_path: Path) -> None:
    text = """\
name = "web"
image = "web:1"
memory_mib = 64
restart = { name = "always" }
autonomy_s = 30
env = ["A=1", "B=x=y"]
"""
    spec = load_deployment_file(_write(tmp_path, text))
    assert (spec.memory_mib, spec.restart.name, spec.autonomy_s) == (64, "always", 30.0)
    assert spec.env == {"A": "1", "B": "x=y"}


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('name = "web"\n', "image", "required but missing"),
        ('name = "web"\nimage = "w:1"\nreplica = 2\n', "replica", "unknown key"),
        ('name = "web"\nimage = "w:1"\nreplicas = "3"\n', "replicas", "valid integer"),
        ('name = "Web_1"\nimage = "w:1"\n', "name", "invalid deployment name 'Web_1'"),
        ('name = "web"\nimage = "w:1"\nmemory_mib = "lots"\n', "memory_mib", "invalid size"),
        ('name = "web"\nimage = "w:1"\nautonomy_s = "soon"\n', "autonomy_s", "invalid duration"),
        ('name = "web"\nimage = "w:1"\nrestart = "sometimes"\n', "restart", "restart policy"),
        ('name = "web"\nimage = "w:1"\nports = ["8080"]\n', "ports", "invalid port mapping"),
        ('name = "web"\nimage = "w:1"\nenv = ["LEVEL"]\n', "env[0]", "is not KEY=VALUE"),
        ('name = "web"\nimage = "w:1"\nmode = "daemon"\n', "mode", "'replicated' or 'per-node'"),
        (
            'name = "web"\nimage = "w:1"\n[strategy]\nmax_surge = 0\nmax_unavailable = 0\n',
            "strategy",
            "cannot both be 0",
        ),
        (
            'name = "web"\nimage = "w:1"\n[placement]\nselector = { zone = 1 }\n',
            "placement.selector.zone",
            "valid string",
        ),
    ],
)
def test_a_bad_field_is_named_with_the_file(
    tmp_path: Path, text: str, field: str, problem: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DeploymentFileError) as caught:
        load_deployment_file(path)
    error = caught.value
    assert (error.path, error.field) == (str(path), field)
    assert problem in error.problem
    assert str(error).startswith(f"{path}: {field}: ")


def test_several_problems_are_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, 'replicas = -1\nbogus = 1\nname = "web"\n')
    with pytest.raises(DeploymentFileError, match=r"\(and 2 more problems\)$"):
        load_deployment_file(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("name = \n", "invalid TOML"), (None, "does not exist")],
)
def test_an_unreadable_file_is_named(tmp_path: Path, text: str | None, problem: str) -> None:
    path = tmp_path / "app.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DeploymentFileError, match=rf"^{path}: {problem}"):
        load_deployment_file(path)


def test_flags_map_onto_the_spec() -> None:
    spec = deployment_spec(
        name="probe",
        image="probe:1",
        replicas=2,
        mode="per-node",
        memory="96M",
        cpus=2,
        env=["A=1", "B=2"],
        ports=["0.0.0.0:8080:80/udp"],
        restart="always",
        selector=["site=b", "gpu=yes"],
        architectures=["aarch64"],
        spread_by="rack",
        max_surge=0,
        max_unavailable=1,
        autonomy="90s",
        on_demand=True,
    )
    assert spec == DeploymentSpec.model_validate(
        {
            "name": "probe",
            "image": "probe:1",
            "replicas": 2,
            "mode": "per-node",
            "memory_mib": 96,
            "vcpus": 2,
            "env": {"A": "1", "B": "2"},
            "ports": [
                {"host_ip": "0.0.0.0", "host_port": 8080, "guest_port": 80, "protocol": "udp"}
            ],
            "restart": {"name": "always"},
            "placement": {
                "selector": {"site": "b", "gpu": "yes"},
                "architectures": ["aarch64"],
                "spread_by": "rack",
            },
            "strategy": {"max_surge": 0, "max_unavailable": 1},
            "autonomy_s": 90.0,
            "on_demand": True,
        }
    )


def test_unset_flags_keep_the_specs_defaults() -> None:
    assert deployment_spec(name="web", image="web:1") == DeploymentSpec(name="web", image="web:1")


def test_flags_override_the_file_field_by_field(tmp_path: Path) -> None:
    spec = deployment_spec(
        _write(tmp_path, FULL),
        image="hub.local:5000/sensor-agg:2",
        env=["EXTRA=1"],
        selector=["rack=7"],
        max_unavailable=0,
    )
    assert spec.image == "hub.local:5000/sensor-agg:2"
    assert spec.env == {"LEVEL": "info", "EXTRA": "1"}
    assert spec.placement.selector == {"zone": "a", "rack": "7"}
    assert spec.placement.spread_by == "zone"
    assert (spec.strategy.max_surge, spec.strategy.max_unavailable) == (2, 0)
    assert spec.replicas == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicas": -1}, "--replicas: Input should be greater than or equal to 0"),
        ({"memory": "1Q"}, "--memory: invalid size '1Q'"),
        ({"memory": "1K"}, "--memory: Input should be greater than or equal to 16"),
        ({"autonomy": "soon"}, "--autonomy: invalid duration 'soon'"),
        ({"ports": ["1:99999"]}, "--publish: invalid port mapping '1:99999'"),
        ({"selector": ["zone"]}, "--selector: 'zone' is not KEY=VALUE"),
        ({"restart": "sometimes"}, "--restart: invalid restart policy"),
        ({"mode": "daemon"}, "--mode: Input should be 'replicated' or 'per-node'"),
        ({"max_surge": 0, "max_unavailable": 0}, "--max-surge/--max-unavailable: max_surge and"),
        ({"name": "Bad_Name"}, "NAME: invalid deployment name 'Bad_Name'"),
    ],
)
def test_a_bad_flag_is_named(options: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"name": "web", "image": "web:1", **options}
    with pytest.raises(UsageError) as caught:
        deployment_spec(**values)  # type: ignore[arg-type]
    assert not isinstance(caught.value, DeploymentFileError)
    assert str(caught.value).startswith(message)


def test_a_bad_flag_over_a_file_names_the_flag_not_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--replicas: ") as caught:
        deployment_spec(_write(tmp_path, FULL), replicas=-5)
    assert not isinstance(caught.value, DeploymentFileError)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"image": "web:1"}, "give NAME"), ({"name": "web"}, "give --image REF")],
)
def test_without_a_file_name_and_image_are_required(options: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        deployment_spec(**options)  # type: ignore[arg-type]
