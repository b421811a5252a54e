"""Deployments that require signatures, against a real hub: an unsigned (or wrongly signed)
image is refused before anything is stored, so no node hears of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.controller import Api, api_for, make_controller
from kit.hub import RunningHub, push_image
from ukedge.image import PrivateKey, generate_private_key
from ukedge.registry import RegistryClient, sign_image


@pytest.fixture
def trusted(tmp_path: Path) -> PrivateKey:
    key = generate_private_key()
    (tmp_path / "ci.pub").write_bytes(key.public.pem())
    return key


@pytest.fixture
def api(tmp_path: Path, trusted: PrivateKey) -> Iterator[Api]:
    controller = make_controller(tmp_path / "controller", trusted_keys=[tmp_path / "ci.pub"])
    with api_for(controller) as api:
        yield api
    controller.close()


def _push(hub: RunningHub) -> str:
    with hub.client() as client:
        digest, _ = push_image(client, "apps/sensor", "1", [b"kernel", b"app"])
    return digest


def _sign(hub: RunningHub, tmp_path: Path, key: PrivateKey) -> None:
    with RegistryClient(hub.host, insecure=True, state_dir=tmp_path / "signer") as client:
        sign_image(client, "apps/sensor", "1", key)


def _spec(hub: RunningHub) -> dict[str, object]:
    return {"name": "sensor", "image": f"{hub.host}/apps/sensor:1", "require_signature": True}


def test_an_unsigned_rollout_is_refused_before_any_node_hears_of_it(
    api: Api, hub: RunningHub, tmp_path: Path, trusted: PrivateKey
) -> None:
    node = api.enrol("edge-1")
    node.beat()
    digest = _push(hub)
    refused = api.admin.post("/v1/deployments", json=_spec(hub))
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert digest in detail and "unsigned" in detail and "apps/sensor" in detail
    assert api.admin.get("/v1/deployments").json() == []
    assert api.admin.get("/v1/replicas").json() == []
    answer = node.beat()
    assert answer.desired is None or answer.desired.instances == []

    # Signed by a key the controller does not trust: still refused.
    _sign(hub, tmp_path, generate_private_key())
    untrusted = api.admin.post("/v1/deployments", json=_spec(hub))
    assert untrusted.status_code == 422
    assert "none valid for a trusted key" in untrusted.json()["detail"]

    # Signed by the trusted key: the rollout goes ahead.
    _sign(hub, tmp_path, trusted)
    made = api.admin.post("/v1/deployments", json=_spec(hub))
    assert made.status_code == 200, made.text
    assert made.json()["revision"] == 1


def test_without_the_requirement_an_unsigned_image_deploys(api: Api, hub: RunningHub) -> None:
    _push(hub)
    spec = {**_spec(hub), "require_signature": False}
    assert api.admin.post("/v1/deployments", json=spec).status_code == 200


def test_a_controller_without_trusted_keys_says_how_to_give_it_one(
    tmp_path: Path, hub: RunningHub
) -> None:
    _push(hub)
    controller = make_controller(tmp_path / "bare")
    try:
        with api_for(controller) as api:
            r = api.admin.post("/v1/deployments", json=_spec(hub))
            assert r.status_code == 422 and "--trusted-key" in r.json()["detail"]
    finally:
        controller.close()


def test_the_requirement_comes_from_a_flag_or_the_deployment_file(tmp_path: Path) -> None:
    from ukedge.controller import deployment_spec, load_deployment_file

    flagged = deployment_spec(None, name="web", image="hub:5000/web:1", require_signature=True)
    assert flagged.require_signature
    assert not deployment_spec(None, name="web", image="hub:5000/web:1").require_signature
    path = tmp_path / "web.toml"
    path.write_text('name = "web"\nimage = "hub:5000/web:1"\nrequire_signature = true\n')
    assert load_deployment_file(path).require_signature
