"""The listen address every server's settings share (ukedge.config.ListenAddr)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from ukedge import config


class _Settings(BaseModel):
    addr: config.ListenAddr = config.ListenAddr("127.0.0.1:5000")

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        return config.check_listen_addr(value, example="127.0.0.1:5000")


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("0.0.0.0:6000", "0.0.0.0", 6000), ("[::1]:7700", "::1", 7700), ("edge:80", "edge", 80)],
)
def test_parts_of_a_checked_address(text: str, host: str, port: int) -> None:
    addr = _Settings(addr=text).addr
    assert isinstance(addr, config.ListenAddr)
    assert (addr.host, addr.port) == (host, port)


def test_default_and_dump_stay_text() -> None:
    settings = _Settings()
    assert (settings.addr.host, settings.addr.port) == ("127.0.0.1", 5000)
    assert settings.model_dump() == {"addr": "127.0.0.1:5000"}
    assert settings.model_dump_json() == '{"addr":"127.0.0.1:5000"}'


@pytest.mark.parametrize("text", ["5000", "host:", ":80", "host:70000", "host:http"])
def test_bad_address_names_an_example(text: str) -> None:
    with pytest.raises(ValidationError, match=r"is not HOST:PORT \(for example 127.0.0.1:5000\)"):
        _Settings(addr=text)
