"""Results: stored once however often a batch is sent, listed by filter and page, streamed live
over HTTPS (server-sent events, resumable by Last-Event-ID)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from httpx_sse import connect_sse

from kit.controller import Api, running_controller
from ukedge.controller import Controller


def _records(first: int, last: int, ts: float = 1000.0) -> list[dict[str, Any]]:
    return [
        {"seq": seq, "ts": ts + seq, "line": f'{{"reading": {seq}}}'}
        for seq in range(first, last + 1)
    ]


def test_batches_are_stored_once(api: Api) -> None:
    node = api.enrol("edge-1")
    assert node.send_results("web-r1", _records(1, 3), deployment="web") == {"stored_through": 3}
    # Sent again (the answer was lost), overlapping the next batch: each record once.
    assert node.send_results("web-r1", _records(1, 5), deployment="web") == {"stored_through": 5}
    stored = api.admin.get("/v1/results").json()
    assert [r["seq"] for r in stored] == [1, 2, 3, 4, 5]
    first = stored[0]
    assert first["result"] == {"reading": 1} and first["raw"] is None
    assert first["node_name"] == "edge-1" and first["deployment"] == "web"
    # The same seq from another instance or node is another record.
    node.send_results("web-r2", _records(1, 1))
    other = api.enrol("edge-2")
    other.send_results("web-r1", _records(1, 1))
    assert len(api.admin.get("/v1/results").json()) == 7


def test_results_need_the_nodes_credential(api: Api) -> None:
    node = api.enrol("edge-1")
    r = api.anon.post(
        f"/v1/nodes/{node.id}/results", json={"instance": "x", "records": _records(1, 1)}
    )
    assert r.status_code == 401
    empty = api.anon.post(
        f"/v1/nodes/{node.id}/results", json={"instance": "x", "records": []}, headers=node.auth
    )
    assert empty.status_code == 422 and "records" in empty.json()["detail"]


def test_filters_and_paging(api: Api) -> None:
    one, two = api.enrol("edge-1"), api.enrol("edge-2")
    one.send_results("a-1", _records(1, 4), deployment="a")
    two.send_results("b-1", _records(1, 3), deployment="b")
    one.send_results("raw", [{"seq": 1, "ts": 5.0, "line": "not json"}])

    def get(**params: Any) -> list[dict[str, Any]]:
        r = api.admin.get("/v1/results", params=params)
        assert r.status_code == 200, r.text
        return list(r.json())

    assert [r["seq"] for r in get(deployment="a")] == [1, 2, 3, 4]
    assert {r["instance"] for r in get(node="edge-2")} == {"b-1"}
    assert {r["instance"] for r in get(node=two.id)} == {"b-1"}
    assert [r["seq"] for r in get(deployment="a", since=1002, until=1004)] == [2, 3]
    [raw] = get(until=100, deployment="")  # an empty filter is none
    assert raw["raw"] == "not json" and raw["result"] is None

    pages, after = [], 0
    while page := get(after_id=after, limit=3):
        pages.append(len(page))
        after = page[-1]["id"]
    assert pages == [3, 3, 2]
    bad = api.admin.get("/v1/results", params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.json()["detail"]


def test_the_stream_delivers_new_records_and_resumes(controller: Controller) -> None:
    with running_controller(controller) as running, running.client() as admin:
        token = admin.post("/v1/tokens", json={}).json()["token"]
        from kit.controller import Node
        from ukedge.host.link import ENROL_PATH, EnrolReply, JoinToken

        with running.client(admin=False) as anon:
            r = anon.post(
                ENROL_PATH,
                json={
                    "token": JoinToken.parse(token).credential,
                    "name": "edge-1",
                    "architecture": "amd64",
                },
            )
            node = Node(anon, "edge-1", EnrolReply.model_validate(r.json()))
            node.send_results("a-1", _records(1, 2), deployment="a")

            seen: list[tuple[str, dict[str, Any]]] = []
            got_three = threading.Event()

            def follow() -> None:
                with (
                    running.client(timeout=httpx.Timeout(30, read=60)) as streaming,
                    connect_sse(streaming, "GET", "/v1/results/stream") as source,
                ):
                    for event in source.iter_sse():
                        seen.append((event.id, event.json()))
                        if len(seen) == 3:
                            got_three.set()
                            return

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            deadline = time.monotonic() + 30
            while len(seen) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            node.send_results("a-1", _records(3, 3), deployment="a")
            assert got_three.wait(30), f"the stream delivered {seen}"
            follower.join(10)
            assert [record["seq"] for _, record in seen] == [1, 2, 3]
            assert [int(i) for i, _ in seen] == [record["id"] for _, record in seen]

            # Resume after the second: only the third comes again.
            resumed: list[int] = []
            with (
                running.client() as streaming,
                connect_sse(
                    streaming,
                    "GET",
                    "/v1/results/stream",
                    headers={"Last-Event-ID": seen[1][0]},
                ) as source,
            ):
                for event in source.iter_sse():
                    resumed.append(event.json()["seq"])
                    break
            assert resumed == [3]
            bad = admin.get("/v1/results/stream", headers={"Last-Event-ID": "x"})
            assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]
