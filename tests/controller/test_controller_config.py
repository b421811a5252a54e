"""Where the CLI finds the controller: a flag, else the environment, else the files of a local
``ukedge controller serve``; a missing piece says how to supply it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukedge.controller import ControllerConfig
from ukedge.errors import UsageError

PEM = "-----BEGIN CERTIFICATE-----\nlocal\n-----END CERTIFICATE-----\n"


@pytest.fixture
def local_controller(ukedge_home: Path) -> Path:
    """The files a controller on this machine keeps in its data directory."""
    data = ukedge_home / "controller"
    data.mkdir()
    (data / "admin.token").write_text("local-token\n")
    (data / "tls.crt").write_text(PEM)
    return data


def test_defaults_are_the_local_controller(local_controller: Path) -> None:
    config = ControllerConfig.resolve(environ={})
    assert config == ControllerConfig(
        "https://127.0.0.1:7700", "local-token", PEM, str(local_controller / "tls.crt")
    )


def test_environment_overrides_the_local_files(local_controller: Path, tmp_path: Path) -> None:
    cert = tmp_path / "centre.crt"
    cert.write_text("remote pem")
    environ = {
        "UKEDGE_CONTROLLER": "https://centre.example:7700/",
        "UKEDGE_CONTROLLER_TOKEN": "env-token",
        "UKEDGE_CONTROLLER_CERT": str(cert),
    }
    config = ControllerConfig.resolve(environ=environ)
    assert config == ControllerConfig(
        "https://centre.example:7700", "env-token", "remote pem", str(cert)
    )


def test_arguments_override_the_environment(local_controller: Path, tmp_path: Path) -> None:
    cert = tmp_path / "flag.crt"
    cert.write_text("flag pem")
    environ = {"UKEDGE_CONTROLLER": "https://env:7700", "UKEDGE_CONTROLLER_TOKEN": "env-token"}
    config = ControllerConfig.resolve(
        "https://flag:7701", token="flag-token", cert=cert, environ=environ
    )
    assert (config.url, config.token, config.cert_pem) == (
        "https://flag:7701",
        "flag-token",
        "flag pem",
    )


def test_no_token_anywhere_says_which_variable_to_set(ukedge_home: Path) -> None:
    with pytest.raises(UsageError, match="set UKEDGE_CONTROLLER_TOKEN") as caught:
        ControllerConfig.resolve(environ={})
    assert str(ukedge_home / "controller" / "admin.token") in str(caught.value)
    assert "ukedge controller serve" in str(caught.value)


def test_the_local_files_are_never_used_for_a_controller_elsewhere(local_controller: Path) -> None:
    with pytest.raises(UsageError, match="no admin token for the controller at https://centre"):
        ControllerConfig.resolve("https://centre:7700", environ={})
    with pytest.raises(UsageError, match="no certificate to trust"):
        ControllerConfig.resolve("https://centre:7700", token="t", environ={})


def test_no_certificate_for_a_remote_controller_says_which_variable_to_set() -> None:
    environ = {"UKEDGE_CONTROLLER": "https://centre:7700", "UKEDGE_CONTROLLER_TOKEN": "t"}
    with pytest.raises(UsageError, match=r"set UKEDGE_CONTROLLER_CERT to a copy of its tls\.crt"):
        ControllerConfig.resolve(environ=environ)


def test_an_unreadable_certificate_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    environ = {"UKEDGE_CONTROLLER_TOKEN": "t", "UKEDGE_CONTROLLER_CERT": str(missing)}
    with pytest.raises(UsageError, match=f"cannot read the controller certificate {missing}"):
        ControllerConfig.resolve(environ=environ)


def test_plain_http_behind_a_proxy_pins_nothing() -> None:
    environ = {"UKEDGE_CONTROLLER": "http://proxy:8080", "UKEDGE_CONTROLLER_TOKEN": "t"}
    assert ControllerConfig.resolve(environ=environ).cert_pem is None


@pytest.mark.parametrize("url", ["centre:7700", "ftp://centre", "https://"])
def test_a_url_that_is_not_one_is_refused(url: str) -> None:
    with pytest.raises(UsageError, match="expected https://HOST"):
        ControllerConfig.resolve(url, token="t", environ={})
