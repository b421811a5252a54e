"""Deployments against a real hub: revisions pin the image, scale, rollback, delete."""

from __future__ import annotations

import json
from typing import Any

from kit.controller import Api
from kit.hub import RunningHub, push_image

CONFIG = json.dumps({"memory_mib": 96, "vcpus": 2}).encode()


def _push(hub: RunningHub, tag: str, layer: bytes) -> str:
    with hub.client() as client:
        digest, _ = push_image(client, "apps/sensor", tag, [b"kernel", layer], config=CONFIG)
    return digest


def _deploy(api: Api, **spec: Any) -> Any:
    r = api.admin.post("/v1/deployments", json=spec)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_revision_pins_the_tag_and_records_layers(api: Api, hub: RunningHub) -> None:
    digest = _push(hub, "1", b"app-v1")
    made = _deploy(api, name="sensor", image=f"{hub.host}/apps/sensor:1", replicas=2)
    assert made["revision"] == 1 and made["spec"]["replicas"] == 2
    assert made["rollout"] == {
        "state": "progressing",
        "revision": 1,
        "desired": 2,
        "updated": 0,
        "ready": 0,
        "unavailable": 2,
        "message": "",
    }
    [revision] = api.admin.get("/v1/deployments/sensor/revisions").json()
    assert revision["image_digest"] == f"{hub.host}/apps/sensor@{digest}"
    with api.controller.db.read() as connection:
        from sqlalchemy import select

        from ukedge.controller._db import revisions

        row = connection.execute(select(revisions)).one()
    assert (row.memory_mib, row.vcpus) == (96, 2)  # from the image's config
    assert sorted(row.layers.values()) == [len(b"app-v1"), len(b"kernel")]

    # The same spec again: nothing new. Only the count changed: a scale, no revision.
    assert (
        _deploy(api, name="sensor", image=f"{hub.host}/apps/sensor:1", replicas=2)["revision"] == 1
    )
    assert (
        _deploy(api, name="sensor", image=f"{hub.host}/apps/sensor:1", replicas=3)["revision"] == 1
    )
    # The tag moved: the same spec makes a new revision with the new digest.
    moved = _push(hub, "1", b"app-v2")
    again = _deploy(api, name="sensor", image=f"{hub.host}/apps/sensor:1", replicas=3)
    assert again["revision"] == 2
    history = api.admin.get("/v1/deployments/sensor/revisions").json()
    assert [h["image_digest"].rpartition("@")[2] for h in history] == [digest, moved]


def test_memory_from_the_spec_wins_over_the_image(api: Api, hub: RunningHub) -> None:
    _push(hub, "1", b"app")
    _deploy(api, name="sensor", image=f"{hub.host}/apps/sensor:1", memory_mib=256)
    with api.controller.db.read() as connection:
        from sqlalchemy import select

        from ukedge.controller._db import revisions

        row = connection.execute(select(revisions)).one()
    assert (row.memory_mib, row.vcpus) == (256, 2)


def test_an_image_the_registry_lacks_is_refused_and_nothing_stored(
    api: Api, hub: RunningHub
) -> None:
    r = api.admin.post(
        "/v1/deployments", json={"name": "ghost", "image": f"{hub.host}/apps/none:1"}
    )
    assert r.status_code == 502
    assert "apps/none" in r.json()["detail"]
    assert api.admin.get("/v1/deployments").json() == []
    named_nothing = api.admin.post("/v1/deployments", json={"name": "x", "image": "app:1"})
    assert (
        named_nothing.status_code == 422 and "names no registry" in named_nothing.json()["detail"]
    )


def test_scale_rollback_delete(api: Api, hub: RunningHub) -> None:
    _push(hub, "1", b"v1")
    _push(hub, "2", b"v2")
    image = f"{hub.host}/apps/sensor"
    _deploy(api, name="sensor", image=f"{image}:1")
    _deploy(api, name="sensor", image=f"{image}:2", env={"A": "b"})

    scaled = api.admin.post("/v1/deployments/sensor/scale", json={"replicas": 5})
    assert scaled.status_code == 200 and scaled.json()["spec"]["replicas"] == 5
    bad = api.admin.post("/v1/deployments/sensor/scale", json={"replicas": -1})
    assert bad.status_code == 422 and "replicas" in bad.json()["detail"]

    undone = api.admin.post("/v1/deployments/sensor/rollback")
    assert undone.status_code == 200, undone.text
    body = undone.json()
    assert body["revision"] == 1 and body["spec"]["image"] == f"{image}:1"
    assert body["spec"]["replicas"] == 5  # the count is the deployment's, not the revision's
    forward = api.admin.post("/v1/deployments/sensor/rollback", json={"revision": 2})
    assert forward.json()["revision"] == 2
    missing = api.admin.post("/v1/deployments/sensor/rollback", json={"revision": 9})
    assert missing.status_code == 404 and "revision 9" in missing.json()["detail"]

    assert [d["name"] for d in api.admin.get("/v1/deployments").json()] == ["sensor"]
    assert api.admin.delete("/v1/deployments/sensor").status_code == 204
    gone = api.admin.get("/v1/deployments/sensor")
    assert gone.status_code == 404 and "sensor" in gone.json()["detail"]
    assert api.admin.delete("/v1/deployments/sensor").status_code == 404
    assert api.admin.get("/v1/deployments/nope/revisions").status_code == 404
    assert api.admin.get("/v1/replicas", params={"deployment": "nope"}).status_code == 404
