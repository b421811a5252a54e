"""Hollow nodes: the link's protocol without a machine behind it, for fleet benchmarks.

Like Kubernetes' kubemark, a hollow node enrols with a join token and heartbeats exactly as an
agent does (same wire models, same pinned TLS, same error mapping), but boots nothing: every
instance its desired state names is reported running and healthy at the revision asked for,
and its allocation is their sum. One process drives hundreds of them on a few connections
(:class:`HollowFleet`), and ``bench/fleet.py`` splits a thousand over several such processes:
that is what lets it load a controller with a fleet this machine could never boot. Never the
default: only code that asks for a hollow node by name gets one, and it reports the
accelerator ``hollow`` so that ``ukedge node ls`` tells it from a real node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import time
from collections.abc import Iterable

import httpx

from ukedge.errors import LinkError
from ukedge.host._models import HealthStatus, InstanceState
from ukedge.host.link._client import DEFAULT_TIMEOUT_S, answer, parse, unreachable
from ukedge.host.link._token import JoinToken, fetch_certificate, pinned_context
from ukedge.host.link._wire import (
    ENROL_PATH,
    HEARTBEAT_PATH,
    DesiredState,
    EnrolReply,
    EnrolRequest,
    Heartbeat,
    HeartbeatReply,
    InstanceReport,
    NodeResources,
)

__all__ = ["HOLLOW_ACCELERATOR", "HollowFleet", "HollowNode"]

log = logging.getLogger(__name__)

#: What a hollow node reports as its accelerator, so the controller's node list shows it.
HOLLOW_ACCELERATOR = "hollow"


class HollowNode:
    """One hollow node's state: its enrolment, the desired state it was last given, and the
    heartbeat that reports all of that desired state running."""

    def __init__(
        self,
        name: str,
        *,
        capacity: NodeResources,
        labels: dict[str, str] | None = None,
        architecture: str | None = None,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.labels = dict(labels or {})
        self.architecture = architecture or platform.machine()
        self.enrolment: EnrolReply | None = None
        self.desired = DesiredState(generation=0)
        self.beats = 0

    @property
    def node_id(self) -> str:
        if self.enrolment is None:
            raise LinkError(f"hollow node {self.name} is not enrolled")
        return self.enrolment.node_id

    def enrol_request(self, token: JoinToken) -> EnrolRequest:
        return EnrolRequest(
            token=token.credential, name=self.name, architecture=self.architecture,
            labels=self.labels,
        )  # fmt: skip

    def reports(self) -> list[InstanceReport]:
        return [
            InstanceReport.of_desired(item, InstanceState.RUNNING, HealthStatus.HEALTHY)
            for item in self.desired.instances
        ]

    def heartbeat(self) -> Heartbeat:
        memory = sum(item.request.memory_mib or 0 for item in self.desired.instances)
        vcpus = sum(item.request.vcpus or 0 for item in self.desired.instances)
        return Heartbeat(
            name=self.name,
            architecture=self.architecture,
            accelerator=HOLLOW_ACCELERATOR,
            labels=self.labels,
            capacity=self.capacity,
            allocated=NodeResources(memory_mib=memory, vcpus=vcpus),
            instances=self.reports(),
            applied_generation=self.desired.generation,
        )

    def apply(self, reply: HeartbeatReply) -> None:
        """ "Run" the desired state the reply carries: at once, since nothing boots."""
        self.beats += 1
        if reply.desired is not None:
            self.desired = reply.desired


class HollowFleet:
    """Many hollow nodes on one event loop and ``connections`` connections to the controller.

    Each node's task heartbeats at the interval the controller asks for (a failed call is
    retried at the next beat, as the agent does); :meth:`stop` ends some nodes' tasks, which is
    how a benchmark kills nodes. Use as ``async with HollowFleet(...) as fleet``.

    Each connection is a client of its own, lent to one call at a time: httpcore's pool scans
    every connection of the pool (and polls each idle one's socket) whenever a request starts
    or ends: profiled with 16 connections in one pool, that scan took 8.9 s of a 20.5 s run of
    1,000 heartbeats; with one connection a client, 2,000 heartbeats cost the driver 5.5 s of
    CPU in all.
    """

    def __init__(self, url: str, cert_pem: str, *, connections: int = 16) -> None:
        self.url = url.rstrip("/")
        self.nodes: list[HollowNode] = []
        self.errors = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        context = pinned_context(cert_pem)
        self._clients = [
            httpx.AsyncClient(
                base_url=self.url,
                verify=context,
                timeout=DEFAULT_TIMEOUT_S,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            for _ in range(connections)
        ]
        self._free: asyncio.Queue[httpx.AsyncClient] | None = None

    @classmethod
    def for_token(cls, url: str, token: JoinToken, **kwargs: int) -> HollowFleet:
        """A fleet whose connections trust the controller's certificate the token pins."""
        return cls(url, fetch_certificate(url, token.fingerprint), **kwargs)

    async def __aenter__(self) -> HollowFleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(self.nodes)
        for client in self._clients:
            await client.aclose()

    async def _post(self, path: str, body: str, what: str, token: str | None) -> object:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if self._free is None:  # made on the event loop that uses it
            self._free = asyncio.Queue()
            for client in self._clients:
                self._free.put_nowait(client)
        client = await self._free.get()
        try:
            response = await client.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise unreachable(self.url, exc, what) from exc
        finally:
            self._free.put_nowait(client)
        return answer(self.url, response, what)

    async def enrol(self, node: HollowNode, token: JoinToken) -> None:
        body = await self._post(
            ENROL_PATH, node.enrol_request(token).model_dump_json(), "the enrolment", None
        )
        node.enrolment = parse(EnrolReply, body, self.url, "enrolment")
        self.nodes.append(node)

    async def beat(self, node: HollowNode) -> HeartbeatReply:
        """One heartbeat of ``node``; its reply applied."""
        assert node.enrolment is not None
        body = await self._post(
            HEARTBEAT_PATH.format(node_id=node.node_id),
            node.heartbeat().model_dump_json(),
            "the heartbeat",
            node.enrolment.credential,
        )
        reply = parse(HeartbeatReply, body, self.url, "heartbeat")
        node.apply(reply)
        return reply

    async def _run(self, node: HollowNode, offset: float) -> None:
        assert node.enrolment is not None
        interval = node.enrolment.heartbeat_interval_s
        await asyncio.sleep(offset * interval)  # spread the fleet's beats over the interval
        while True:
            started = time.monotonic()
            try:
                interval = (await self.beat(node)).heartbeat_interval_s
            except LinkError as exc:  # LinkUnavailable too: retried at the next beat
                self.errors += 1
                log.debug("hollow node %s: %s", node.name, exc)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def start(self, nodes: Iterable[HollowNode] | None = None) -> None:
        """Start heartbeating (every enrolled node by default), spread over one interval."""
        chosen = list(self.nodes if nodes is None else nodes)
        for index, node in enumerate(chosen):
            if node.name not in self._tasks:
                offset = index / max(1, len(chosen))
                self._tasks[node.name] = asyncio.create_task(self._run(node, offset))

    async def stop(self, nodes: Iterable[HollowNode]) -> None:
        """Stop these nodes' heartbeats, as if their machines had died."""
        tasks = [t for n in nodes if (t := self._tasks.pop(n.name, None)) is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
