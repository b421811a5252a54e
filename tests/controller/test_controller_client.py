"""The controller client against a real HTTPS server (uvicorn, a self-signed certificate): it
trusts exactly the pinned certificate, sends the admin token, turns refusals into
ControllerError with the server's detail, names the URL when nothing listens, and its result
stream resumes after the last record with Last-Event-ID whether the server closes the stream
cleanly or the connection breaks.

The server is kit.fake_controller's stand-in with the contract's routes (the real controller app is
tested end to end once it is merged); what it checks and records is what the client is judged
on.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.fake_controller import NODE, TOKEN, FakeController
from kit.net import free_port
from kit.tls import CertFiles, self_signed, serve_asgi
from ukedge.controller import ControllerClient, ControllerConfig, DeploymentSpec
from ukedge.errors import ControllerError


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fake() -> FakeController:
    return FakeController()


@pytest.fixture
def url(fake: FakeController, certs: CertFiles) -> Iterator[str]:
    with serve_asgi(fake.app(), certs) as base:
        yield base


def _client(url: str, pem: str, token: str = TOKEN) -> ControllerClient:
    return ControllerClient(ControllerConfig(url, token, pem, "test.crt"))


def test_pinned_certificate_and_token_reach_the_controller(url: str, certs: CertFiles) -> None:
    with _client(url, certs.pem) as client:
        [node] = client.nodes()
        assert (node.name, node.allocated_memory_mib, node.labels) == ("edge-1", 128, {"zone": "a"})
        assert client.node("edge-1").id == NODE["id"]


def test_another_certificate_is_refused_with_what_to_do(url: str, tmp_path: Path) -> None:
    other = self_signed(tmp_path, "impostor")
    with _client(url, other.pem) as client, pytest.raises(ControllerError) as caught:
        client.nodes()
    message = str(caught.value)
    assert f"the server at {url} is not the controller" in message
    assert "UKEDGE_CONTROLLER_CERT" in message


def test_a_server_without_tls_is_named(fake: FakeController, certs: CertFiles) -> None:
    with serve_asgi(fake.app(), None) as plain:
        url = plain.replace("http://", "https://")
        with _client(url, certs.pem) as client, pytest.raises(ControllerError) as caught:
            client.nodes()
    assert str(caught.value).startswith(f"TLS with the server at {url} failed (")
    assert "It speaks HTTPS only" in str(caught.value)


def test_wrong_token_says_which_setting_to_fix(url: str, certs: CertFiles) -> None:
    with _client(url, certs.pem, token="wrong") as client, pytest.raises(ControllerError) as caught:
        client.nodes()
    assert caught.value.status == 401
    assert "refused the admin token (invalid admin token)" in str(caught.value)
    assert "UKEDGE_CONTROLLER_TOKEN" in str(caught.value)


def test_refusals_carry_the_servers_detail(url: str, certs: CertFiles) -> None:
    with _client(url, certs.pem) as client:
        with pytest.raises(ControllerError, match=r"^no such node: edge-9$") as nf:
            client.node("edge-9")
        assert nf.value.status == 404
        with pytest.raises(ControllerError, match=r"^uses: Input should be") as bad:
            client.create_token("batch", uses=0)
        assert bad.value.status == 422


def test_nothing_listening_names_the_url_and_how_to_start_one(certs: CertFiles) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    with _client(url, certs.pem) as client, pytest.raises(ControllerError) as caught:
        client.nodes()
    assert f"cannot reach the controller at {url}" in str(caught.value)
    assert "ukedge controller serve" in str(caught.value)


def test_node_actions_go_by_id_whatever_name_was_given(
    url: str, certs: CertFiles, fake: FakeController
) -> None:
    with _client(url, certs.pem) as client:
        node = client.label_node("edge-1", {"gpu": "yes"}, ["zone"])
        assert node.labels == {"gpu": "yes"}
        assert client.cordon("edge-1").cordoned
    assert fake.labels == [{"set": {"gpu": "yes"}, "remove": ["zone"]}]
    assert fake.cordoned == [NODE["id"]]


def test_deploy_sends_the_whole_spec(url: str, certs: CertFiles, fake: FakeController) -> None:
    spec = DeploymentSpec(name="sensor-agg", image="hub.local:5000/sensor-agg:1", replicas=3)
    with _client(url, certs.pem) as client:
        deployment = client.deploy(spec)
    assert deployment.rollout.desired == 3
    assert DeploymentSpec.model_validate(fake.deployed[0]) == spec


def test_result_stream_resumes_after_the_last_record(
    url: str, certs: CertFiles, fake: FakeController
) -> None:
    with _client(url, certs.pem) as client:
        stream = client.stream_results(deployment="sensor-agg", retry_s=0.05)
        ids = [record.id for record in itertools.islice(stream, 6)]
        stream.close()
    assert ids == [1, 2, 3, 4, 5, 6]  # none lost, none twice, across a clean end and a break
    # The first connection asked for everything new; each reconnect named the last record.
    assert fake.last_event_ids == [None, "2", "3"]


def test_result_stream_rides_out_a_controller_answering_503_while_it_starts(
    url: str, certs: CertFiles, fake: FakeController
) -> None:
    fake.unavailable = 2
    with _client(url, certs.pem) as client:
        stream = client.stream_results(retry_s=0.05)
        ids = [record.id for record in itertools.islice(stream, 4)]
        stream.close()
    assert ids == [1, 2, 3, 4]
    assert fake.last_event_ids == [None, "2", "3", "3", "3"]


def test_result_stream_starts_after_a_given_record_and_stops_on_request(
    url: str, certs: CertFiles, fake: FakeController
) -> None:
    stop = threading.Event()
    seen: list[int] = []
    with _client(url, certs.pem) as client:
        for record in client.stream_results(after_id=40, stop=stop, retry_s=0.05):
            seen.append(record.id)
            if len(seen) == 2:
                stop.set()
    assert seen == [41, 42]
    assert fake.last_event_ids == ["40"]


def test_result_stream_to_nothing_listening_fails_at_once(certs: CertFiles) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    with _client(url, certs.pem) as client, pytest.raises(ControllerError, match="cannot reach"):
        next(client.stream_results())
