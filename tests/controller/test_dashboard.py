"""The dashboard at ``/``: the route's headers and content (fast), and the page itself in
headless Chromium against a controller served over HTTPS with enrolled nodes, a deployment and
results arriving while the page is open (interop)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httpx_sse import connect_sse

from kit.browser import CHROMEDRIVER, CHROMIUM, Browser, browser
from kit.controller import Api, api_for, make_controller, running_controller
from kit.hub import RunningHub, push_image
from ukedge.controller import Controller


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Controller]:
    """A controller on SQLite: the page does not depend on the database kind."""
    made = make_controller(tmp_path / "controller")
    yield made
    made.close()


def test_the_page_is_served_without_auth_and_holds_no_secret(local: Controller) -> None:
    with api_for(local) as api:
        page = api.anon.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["x-content-type-options"] == "nosniff"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert 'src="/ui/dashboard.js"' in page.text
        assert "<script>" not in page.text  # no inline code: the policy would refuse it
        # The same bytes whether or not the caller holds the token: nothing of it in the page.
        assert api.admin.get("/").content == page.content
        assert local.identity.admin_token not in page.text
        for path, kind in (
            ("/ui/dashboard.js", "text/javascript"),
            ("/ui/dashboard.css", "text/css"),
        ):
            asset = api.anon.get(path)
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
            assert asset.headers["cache-control"] == "no-cache"
            again = api.anon.get(path, headers={"If-None-Match": asset.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        assert api.anon.get("/ui/other.js").status_code == 404
        assert api.anon.get("/v1/nodes").status_code == 401  # the API stays closed
        paths = api.anon.get("/openapi.json").json()["paths"]
        assert "/" not in paths and "/ui/dashboard.js" not in paths


def test_the_stream_can_start_at_the_recent_past(local: Controller) -> None:
    """``tail=N`` (the page's feed) starts with the newest N stored records, not all of them;
    a ``Last-Event-ID`` still resumes exactly where the client was."""
    from ukedge.controller._results import ResultQuery, tail_cursor

    records = [{"seq": s, "ts": 1000.0 + s, "line": json.dumps({"n": s})} for s in range(1, 6)]
    with (
        running_controller(local) as running,
        running.client() as admin,
        running.client(admin=False) as anon,
    ):
        node = Api(local, admin, anon).enrol("edge-1")
        node.send_results("a-1", records, deployment="a")
        node.send_results("b-1", records[:2], deployment="b")
        ids = [r["id"] for r in admin.get("/v1/results", params={"deployment": "a"}).json()]

        def first(count: int, **request: Any) -> list[int]:
            seen: list[int] = []
            with connect_sse(admin, "GET", "/v1/results/stream", **request) as source:
                for event in source.iter_sse():
                    seen.append(int(event.id))
                    if len(seen) == count:
                        return seen
            return seen

        assert first(2, params={"deployment": "a", "tail": 2}) == ids[3:]
        assert first(3, params={"tail": 3}) == [ids[4], ids[4] + 1, ids[4] + 2]
        resumed = {"params": {"tail": 1}, "headers": {"Last-Event-ID": str(ids[0])}}
        assert first(2, **resumed) == ids[1:3]
    assert tail_cursor(local.db, ResultQuery(deployment="a"), 5) == 0
    assert tail_cursor(local.db, ResultQuery(deployment="a"), 0) == ids[4]
    assert tail_cursor(local.db, ResultQuery(deployment="none"), 3) == 0


CONFIG = json.dumps({"memory_mib": 96, "vcpus": 2}).encode()


def _rows(page: Browser, table: str, key: str) -> dict[str, Any]:
    """The rows of a dashboard table by their ``data-`` key: cell texts and gauge values."""
    return dict(
        page.script(
            """
            const [table, key] = arguments;
            return [...document.querySelectorAll(`#${table} tbody tr`)].map((tr) => [
              tr.dataset[key],
              {cells: [...tr.cells].map((td) => td.textContent.trim()),
               meters: [...tr.querySelectorAll("meter")].map((m) => [m.value, m.max]),
               progress: [...tr.querySelectorAll("progress")].map((p) => [p.value, p.max])},
            ]);
            """,
            table,
            key,
        )
    )


@pytest.mark.interop
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver (Debian packages chromium, chromium-driver)",
)
def test_the_dashboard_in_headless_chromium(hub: RunningHub, tmp_path: Path) -> None:
    with hub.client() as client:
        push_image(client, "apps/sensor", "1", [b"kernel", b"app"], config=CONFIG)
    # A short NotReady timeout, so a silent node shows NotReady soon; the others keep beating.
    local = make_controller(tmp_path / "controller", not_ready_after_s=4.0)
    stop = threading.Event()
    with (
        contextlib.closing(local),
        running_controller(local, run_loop=True) as running,
        running.client() as admin,
        running.client(admin=False) as anon,
        running.client(admin=False) as beats,
        contextlib.ExitStack() as cleanup,
    ):
        api = Api(local, admin, anon)
        edge1 = api.enrol("edge-1")
        edge2 = api.enrol("edge-2")
        edge1.allocated_memory_mib, edge1.allocated_vcpus = 1024, 3
        edge2.memory_mib, edge2.vcpus = 2048, 4
        edge1.beat()
        edge2.beat()

        def beat() -> None:
            beating = [dataclasses.replace(edge, client=beats) for edge in (edge1, edge2)]
            while not stop.wait(0.25):
                for edge in beating:
                    edge.beat()

        beater = threading.Thread(target=beat, daemon=True)
        beater.start()
        cleanup.callback(beater.join, 10)
        cleanup.callback(stop.set)  # first: LIFO
        assert admin.post(f"/v1/nodes/{edge2.id}/cordon").status_code == 200
        edge3 = api.enrol("edge-3")  # never heartbeats: NotReady after 4 s; drained
        assert admin.post(f"/v1/nodes/{edge3.id}/drain").status_code == 200
        made = admin.post(
            "/v1/deployments",
            json={"name": "sensor", "image": f"{hub.host}/apps/sensor:1", "replicas": 2},
        )
        assert made.status_code == 200, made.text
        edge1.send_results(
            "sensor-old", [{"seq": 1, "ts": time.time(), "line": '{"t": 1}'}], deployment="sensor"
        )

        with browser(tmp_path / "chromium", cert_pem=local.identity.cert_pem) as page:
            page.open(running.url + "/")
            page.wait_for(
                lambda: page.script("return !document.querySelector('#login').hidden"),
                "the token form",
            )
            assert page.script("return document.querySelector('#dashboard').hidden")
            # A wrong token: refused by the API, the form comes back saying so.
            page.type("#token", "not-the-token")
            page.click("#login button[type=submit]")
            refused = page.wait_for(
                lambda: page.script("return document.querySelector('#login-error').textContent"),
                "the refusal",
            )
            assert "not this controller's admin token" in refused
            assert page.script("return sessionStorage.length") == 0
            page.type("#token", local.identity.admin_token)
            page.click("#login button[type=submit]")

            # Nodes: status badges and capacity gauges, as the API reports them.
            nodes = page.wait_for(
                lambda: (
                    (rows := _rows(page, "nodes", "node"))
                    and len(rows) == 3
                    and rows["edge-3"]["cells"][1].startswith("NotReady")
                    and rows
                ),
                "the three nodes, edge-3 NotReady",
            )
            records = {n["name"]: n for n in admin.get("/v1/nodes").json()}
            assert nodes["edge-1"]["cells"][1] == "Ready"
            assert nodes["edge-2"]["cells"][1] == "Readycordoned"
            assert nodes["edge-3"]["cells"][1] == "NotReadydraining"
            assert nodes["edge-1"]["meters"] == [[1024, 4096], [3, 8]]
            assert nodes["edge-2"]["meters"] == [[0, 2048], [0, 4]]
            assert nodes["edge-1"]["cells"][3:5] == ["1024 / 4096 MiB", "3 / 8"]
            for name, row in nodes.items():
                record = records[name]
                status = "Ready" if record["status"] == "ready" else "NotReady"
                status += "cordoned" * record["cordoned"] + "draining" * record["draining"]
                assert row["cells"][1] == status
                memory = f"{record['allocated_memory_mib']} / {record['capacity_memory_mib']} MiB"
                assert row["cells"][3] == memory
                assert (
                    row["cells"][4] == f"{record['allocated_vcpus']} / {record['capacity_vcpus']}"
                )

            # The deployment's rollout line, as the API reports it (polled together: the loop
            # may place replicas between one read and the other).
            def rollout_line() -> tuple[dict[str, Any], dict[str, Any]] | None:
                rollout = admin.get("/v1/deployments/sensor").json()["rollout"]
                want = (
                    f"revision 1 {rollout['state']}: desired 2, updated {rollout['updated']}, "
                    f"ready {rollout['ready']}, unavailable {rollout['unavailable']}"
                )
                row = _rows(page, "deployments", "deployment").get("sensor")
                return (row, rollout) if row and row["cells"][3] == want else None

            deployment, rollout = page.wait_for(rollout_line, "the deployment's rollout line")
            line = deployment["cells"]
            assert line[0] == "sensor" and line[1] == f"{hub.host}/apps/sensor:1"
            # No node runs anything here: the rollout stays progressing with nothing ready.
            assert rollout["state"] == "progressing" and rollout["ready"] == 0
            assert line[3].startswith("revision 1 progressing: desired 2, updated ")
            assert deployment["progress"] == [[0, 2]]

            # Its replicas, placed by the loop on the one schedulable node.
            replicas = page.wait_for(
                lambda: (
                    (rows := _rows(page, "replicas", "replica"))
                    and len(rows) == 2
                    and all(row["cells"][3] != "(unplaced)" for row in rows.values())
                    and rows
                ),
                "two replicas placed",
            )
            assert {r["cells"][3] for r in replicas.values()} == {"edge-1"}
            assert set(replicas) == {r["replica"] for r in admin.get("/v1/replicas").json()}

            # The feed: the stored result, then one posted while the page is open.
            def feed() -> list[str]:
                return list(
                    page.script(
                        "return [...document.querySelectorAll('#feed li')]"
                        ".map((li) => li.textContent)"
                    )
                )

            page.wait_for(lambda: any('{"t":1}' in item for item in feed()), "the stored result")
            page.wait_for(
                lambda: (
                    page.script("return document.querySelector('#feed-state').textContent")
                    == "live"
                ),
                "the live stream",
            )
            edge1.send_results(
                "sensor-a", [{"seq": 7, "ts": time.time(), "line": '{"t": 2}'}], deployment="sensor"
            )
            items = page.wait_for(
                lambda: (got := feed()) and any('{"t":2}' in item for item in got) and got,
                "the live result",
            )
            assert "edge-1/sensor-a #7" in items[0]
            assert len(items) == 2

            # A reload keeps the token for this tab (sessionStorage), and shows the fleet again;
            # nothing of the token reaches the markup. Forgetting it clears it.
            page.open(running.url + "/")
            page.wait_for(lambda: "edge-1" in _rows(page, "nodes", "node"), "the nodes again")
            assert local.identity.admin_token not in page.script(
                "return document.documentElement.outerHTML"
            )
            page.click("#logout")
            assert page.script("return sessionStorage.length") == 0
            assert page.script("return document.querySelector('#dashboard').hidden")
            assert page.script("return document.querySelectorAll('tbody tr, #feed li').length") == 0


@pytest.mark.interop
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver (Debian packages chromium, chromium-driver)",
)
def test_the_dashboards_actions_in_headless_chromium(tmp_path: Path) -> None:
    """Cordon, drain, uncordon a node and scale a deployment from the page: each is the API's
    own route with the admin token, and the page shows its effect."""
    local = make_controller(tmp_path / "controller")
    image = "127.0.0.1:1/apps/sensor@sha256:" + "e" * 64  # pinned: no registry is asked
    with (
        contextlib.closing(local),
        running_controller(local) as running,
        running.client() as admin,
        running.client(admin=False) as anon,
    ):
        api = Api(local, admin, anon)
        for name in ("edge-1", "edge-2"):
            api.enrol(name).beat()
        made = admin.post("/v1/deployments", json={"name": "sensor", "image": image, "replicas": 2})
        assert made.status_code == 200, made.text

        def node(name: str) -> dict[str, Any]:
            [found] = [n for n in admin.get("/v1/nodes").json() if n["name"] == name]
            return dict(found)

        with browser(tmp_path / "chromium", cert_pem=local.identity.cert_pem) as page:
            page.open(running.url + "/")
            page.wait_for(
                lambda: page.script("return !document.querySelector('#login').hidden"),
                "the token form",
            )
            page.type("#token", local.identity.admin_token)
            page.click("#login button[type=submit]")
            page.wait_for(lambda: len(_rows(page, "nodes", "node")) == 2, "the two nodes")

            def press(name: str, action: str) -> None:
                """Click the row's button in the page itself (the table is redrawn every few
                seconds, so a handle to a button taken from outside may be a stale one)."""
                pressed = page.script(
                    """
                    const [name, action] = arguments;
                    const button = document.querySelector(
                      `#nodes tr[data-node="${name}"] button[data-action="${action}"]`);
                    if (!button) return false;
                    button.click();
                    return true;
                    """,
                    name,
                    action,
                )
                assert pressed, f"no {action} button for {name}"

            def cells(name: str) -> list[str]:
                return list(_rows(page, "nodes", "node")[name]["cells"])

            press("edge-1", "cordon")
            page.wait_for(lambda: node("edge-1")["cordoned"], "edge-1 cordoned")
            page.wait_for(
                lambda: (
                    page.script("return document.querySelector('#action').textContent")
                    == "cordon edge-1: done"
                ),
                "the page saying so",
            )
            page.wait_for(lambda: cells("edge-1")[1] == "Readycordoned", "the cordoned badge")
            assert cells("edge-1")[7] == "uncordondrain"  # cordoned: uncordon offered
            assert not node("edge-2")["cordoned"]

            press("edge-1", "drain")
            page.wait_for(lambda: node("edge-1")["draining"], "edge-1 draining")
            page.wait_for(lambda: cells("edge-1")[7] == "uncordon", "only uncordon offered")

            press("edge-1", "uncordon")
            page.wait_for(
                lambda: not node("edge-1")["cordoned"] and not node("edge-1")["draining"],
                "edge-1 uncordoned",
            )
            page.wait_for(lambda: cells("edge-1")[1:8:6] == ["Ready", "cordondrain"], "Ready")

            # Scale: a count the form refuses sends nothing; a good one reaches the API.
            page.wait_for(
                lambda: (
                    page.script("return document.querySelector('#scale-deployment').value")
                    == "sensor"
                ),
                "the deployment to scale",
            )
            page.script("document.querySelector('#scale-replicas').value = '2.5'")
            page.script("document.querySelector('#scale').requestSubmit()")
            status = page.wait_for(
                lambda: page.script("return document.querySelector('#action').textContent"),
                "the refusal",
            )
            assert "whole number" in status
            assert admin.get("/v1/deployments/sensor").json()["spec"]["replicas"] == 2
            page.script("document.querySelector('#scale-replicas').value = '5'")
            page.script("document.querySelector('#scale').requestSubmit()")
            page.wait_for(
                lambda: admin.get("/v1/deployments/sensor").json()["spec"]["replicas"] == 5,
                "the deployment scaled to 5",
            )
            page.wait_for(
                lambda: (
                    page.script("return document.querySelector('#action').textContent")
                    == "scale sensor to 5: done"
                ),
                "the page saying so",
            )
