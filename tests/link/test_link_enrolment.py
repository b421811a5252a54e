"""Enrolment: the stored record is reused without a token, another controller is refused with
the way out, and the pin is checked against a real TLS server before any secret is sent."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.pins import self_signed_cert
from ukedge.errors import UsageError
from ukedge.host.agent import load_agent_settings
from ukedge.host.link import (
    Enrolment,
    JoinToken,
    certificate_fingerprint,
    ensure_enrolment,
    fetch_certificate,
    load_enrolment,
    pinned_context,
)
from ukedge.host.link._enrolment import FILE_NAME
from ukedge.host.link._files import write_private

PIN = "ab" * 32
TOKEN = f"UKJ1.{PIN}.tok12345.{'s' * 24}"


def _enrolled(data: Path, url: str = "https://ctl.example:7700") -> Enrolment:
    record = Enrolment(
        controller=url, node_id="n-1", credential="cred", cert="PEM", heartbeat_interval_s=2.0
    )
    write_private(data / FILE_NAME, record.model_dump_json(), crash_name="test")
    return record


def _ensure(data: Path, controller: str | None, token: str | None) -> Enrolment | None:
    return ensure_enrolment(
        data, controller, token, name="edge-1", architecture="x86_64", labels={}
    )


def test_join_token_parse_round_trip_and_errors() -> None:
    token = JoinToken.parse(f"  {TOKEN}\n")
    assert (token.fingerprint, token.token_id) == (PIN, "tok12345")
    assert token.encode() == TOKEN
    assert token.credential == f"tok12345.{'s' * 24}"  # the pin never leaves the node
    for bad in ["", "UKJ1.zz.tok12345.secret", TOKEN.replace("UKJ1", "UKJ2"), TOKEN + ".x"]:
        with pytest.raises(UsageError, match="invalid join token"):
            JoinToken.parse(bad)


def test_not_enrolled_and_no_controller_is_no_link(tmp_path: Path) -> None:
    assert _ensure(tmp_path, None, None) is None
    assert not (tmp_path / FILE_NAME).exists()


def test_a_stored_enrolment_is_reused_without_a_token(tmp_path: Path) -> None:
    record = _enrolled(tmp_path)
    assert _ensure(tmp_path, None, None) == record
    assert _ensure(tmp_path, "https://ctl.example:7700/", None) == record
    assert _ensure(tmp_path, "https://ctl.example:7700", TOKEN) == record  # token not used


def test_another_controller_is_refused_with_the_way_out(tmp_path: Path) -> None:
    _enrolled(tmp_path)
    with pytest.raises(UsageError) as caught:
        _ensure(tmp_path, "https://other:7700", TOKEN)
    message = str(caught.value)
    assert (
        "enrolled with the controller https://ctl.example:7700, not https://other:7700" in message
    )
    assert "ukedge node rm n-1" in message
    assert str(tmp_path / FILE_NAME) in message
    assert load_enrolment(tmp_path) is not None  # nothing changed


@pytest.mark.parametrize(
    ("controller", "token", "message"),
    [
        (None, TOKEN, "--join-token needs --controller"),
        ("https://ctl:7700", None, "pass --join-token"),
        ("https://ctl:7700", "nonsense", "invalid join token"),
        ("http://ctl:7700", TOKEN, "expected https://HOST"),
    ],
)
def test_first_enrolment_needs_both(
    tmp_path: Path, controller: str | None, token: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        _ensure(tmp_path, controller, token)
    assert not (tmp_path / FILE_NAME).exists()


def test_a_damaged_record_says_how_to_enrol_again(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("{}")
    with pytest.raises(UsageError, match="--join-token T to enrol again"):
        _ensure(tmp_path, None, None)


def test_record_is_private(tmp_path: Path) -> None:
    _enrolled(tmp_path)
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UKEDGE_AGENT_CONTROLLER": "http://ctl:7700"}, "expected https://HOST"),
        ({"UKEDGE_AGENT_JOIN_TOKEN": "nope"}, "invalid join token"),
    ],
)
def test_agent_settings_check_both_early(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_agent_settings(environ=env)


def test_agent_settings_take_them_from_the_environment() -> None:
    settings = load_agent_settings(
        environ={"UKEDGE_AGENT_CONTROLLER": "https://ctl:7700", "UKEDGE_AGENT_JOIN_TOKEN": TOKEN}
    )
    assert (settings.controller, settings.join_token) == ("https://ctl:7700", TOKEN)


# -- the pin, against a real TLS server --------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A TLS server on loopback whose certificate names some other host: (url, its PEM)."""
    cert, key, pem = self_signed_cert(tmp_path, "controller.elsewhere")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{port}", pem
    stop.set()
    thread.join(5)
    listener.close()


def test_the_pinned_certificate_is_fetched_and_trusted_by_ip(tls_server: tuple[str, str]) -> None:
    url, pem = tls_server
    assert fetch_certificate(url, certificate_fingerprint(pem)) == pem
    # The pinned context trusts exactly that certificate, whatever name it carries.
    host, port = url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        pinned_context(pem).wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() is not None


def test_another_certificate_is_refused_before_enrolling(
    tls_server: tuple[str, str], tmp_path: Path
) -> None:
    url, _pem = tls_server
    with pytest.raises(UsageError, match="is not the controller this join token was made for"):
        _ensure(tmp_path, url, TOKEN)
    assert not (tmp_path / FILE_NAME).exists()
    _other, _key, other_pem = self_signed_cert(tmp_path, "other")
    host, port = url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        pinned_context(other_pem).wrap_socket(raw, server_hostname=host)


def test_an_unreachable_controller_is_a_clear_error(tmp_path: Path) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(UsageError, match=r"cannot reach the controller at https://127\.0\.0\.1"):
        _ensure(tmp_path, f"https://127.0.0.1:{port}", TOKEN)
