"""One text for pydantic's errors: the Ukfile, server settings, run requests, the agent's API."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ukedge.config import load_settings
from ukedge.errors import UsageError
from ukedge.host import run_request
from ukedge.validation import field_path, validation_message, validation_problems


class _Port(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str
    ports: list[_Port] = []
    copy_: dict[str, str] = {}
    env: dict[str, str] = {}

    @field_validator("env")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        if any("=" in k for k in value):
            raise ValueError("not a valid environment variable name")
        return value


def _errors(**fields: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Request.model_validate(fields)
    return info.value


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("ports", 0, "host_port"), "ports[0].host_port"),
        (("body", "ports", 1), "ports[1]"),
        (("query", "body"), "query.body"),
        (("copy_",), "copy"),
        ((0,), "[0]"),
        ((), ""),
    ],
)
def test_field_paths_read_as_written(loc: tuple[int | str, ...], expected: str) -> None:
    assert field_path(loc) == expected


def test_each_kind_of_error_in_words() -> None:
    exc = _errors(ports=[{"host_port": 0}], surprise=1, env={"A=B": "c"}, copy_={"a": 1})
    problems = dict(validation_problems(exc))
    assert problems["image"] == "required but missing"
    assert problems["copy.a"] == "Input should be a valid string (got int 1)"
    assert problems["surprise"] == "unknown key (check the spelling)"
    assert problems["ports[0].host_port"] == "Input should be greater than or equal to 1"
    assert problems["env"] == "not a valid environment variable name"
    (wrong_type,) = dict(validation_problems(_errors(image=["x" * 200]))).values()
    assert wrong_type.startswith("Input should be a valid string (got list ['xxx")
    assert wrong_type.endswith("...)") and len(wrong_type) < 200


def test_one_line_names_every_field_and_the_whole_object() -> None:
    message = validation_message(_errors(ports=[{"host_port": 70000}]))
    assert message == (
        "image: required but missing; "
        "ports[0].host_port: Input should be less than or equal to 65535"
    )
    whole = validation_message([{"loc": (), "msg": "Value error, too big", "type": "value_error"}])
    assert whole == "request: too big"


def test_run_requests_and_settings_use_it() -> None:
    with pytest.raises(UsageError, match=r"invalid run request: memory_mib: .*greater than"):
        run_request(image="x", memory_mib=1)

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        port: int = 1

    with pytest.raises(
        UsageError, match=r"invalid demo settings: port: Input should be a valid integer"
    ):
        load_settings(Settings, section="demo", env_prefix="DEMO_", environ={"DEMO_PORT": "x"})
