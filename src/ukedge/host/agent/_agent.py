"""The host agent: one node's manager, image cache, supervisor and results forwarder, wired.

:class:`Agent` is the composition root the REST server (``ukedge host serve``) and tests build.
It owns the background work that makes a node more than the CLI: a supervisor thread that
reconciles instances (restart policies, health checks), the results forwarder, the
on-demand listeners and, when the node is enrolled with a controller, the controller link
(heartbeats, the desired state, results to the controller). Everything durable lives under
``data_dir``, so an agent killed with ``kill -9`` and started again on the same directory finds
its images, its instances (the VMs keep running: they are not the agent's children), its
undelivered results, its enrolment and its last desired state.
"""

from __future__ import annotations

import logging
import platform
import re
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ukedge import config, paths
from ukedge.errors import ImageError, NoSuchInstanceError, UsageError
from ukedge.host._names import NAME_PATTERN
from ukedge.host._wiring import NodeLayout, open_node
from ukedge.host.instances import Capacity, host_capacity
from ukedge.host.link import (
    ControllerLink,
    ControllerSink,
    JoinToken,
    LinkClient,
    ensure_enrolment,
    marks_of,
)
from ukedge.host.migration import LinkMoves, Migrations
from ukedge.host.policy import load_policy
from ukedge.host.results import ResultForwarder, ResultSpool, manager_sources
from ukedge.host.results import sinks as result_sinks
from ukedge.image import Platform, host_platform, parse_platform
from ukedge.units import parse_size

__all__ = ["DEFAULT_ADDR", "ENV_PREFIX", "Agent", "AgentSettings", "load_agent_settings"]

log = logging.getLogger(__name__)

ENV_PREFIX = "UKEDGE_AGENT_"
DEFAULT_ADDR = "127.0.0.1:7600"
_HOST_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?\Z")
#: vCPUs per host CPU admission allows by default: a vCPU is a thread that mostly sleeps.
_VCPUS_PER_CPU = 4


class AgentSettings(BaseModel):
    """What ``ukedge host serve`` is told, by flag, ``UKEDGE_AGENT_*`` variable or TOML file."""

    model_config = ConfigDict(extra="forbid")

    #: Images, instances, results spool, token and socket; keep it on a persistent disk.
    data_dir: Path = Field(default_factory=lambda: paths.home() / "agent")
    #: TCP address of the REST API (bearer token required); empty turns TCP off.
    addr: config.ListenAddr = config.ListenAddr(DEFAULT_ADDR)
    #: Unix socket of the REST API (no token: file permissions guard it); default in data_dir.
    socket: Path | None = None
    #: Registry (HOST[:PORT]) for image references that name none.
    hub: str | None = None
    name: str = Field(default_factory=lambda: platform.node() or "localhost")
    labels: dict[str, str] = Field(default_factory=dict)
    #: Result sinks (``mqtt://broker:1883``); each keeps its own cursor in the spool.
    mqtt: list[str] = Field(default_factory=list)
    #: The controller to enrol with (``https://HOST:7700``); once enrolled, the stored
    #: enrolment is used and this may be left out.
    controller: str | None = None
    #: Join token for the first start (``ukedge controller token create``); not needed after.
    join_token: str | None = None
    #: Guest memory instances may commit (``8G``); default: host memory less a reserve.
    memory: str | None = None
    #: vCPUs instances may commit; default: 4 per host CPU (idle unikernels barely use theirs).
    cpus: int | None = Field(default=None, ge=1)
    #: Admission multiplies memory and vCPUs by this (idle VMs rarely touch all their memory).
    overcommit: float = Field(default=1.0, gt=0, le=100)
    #: Size budget of the image cache (``4G``); least recently used unused images go first.
    image_budget: str | None = None
    #: Signature policy (TOML, :mod:`ukedge.host.policy`): which keys must have signed which
    #: images; checked at pull and before every start.
    policy: Path | None = None
    #: User QEMU drops to when the agent runs as root; ``""`` keeps root (not advised).
    qemu_user: str | None = None
    #: The platform this node runs (``linux/arm64``): which manifest of a multi-platform image
    #: it pulls and boots, and what it reports to the controller for placement. Default: the
    #: host's. Another architecture than the host's runs emulated (TCG), slowly, on purpose.
    platform: str | None = None
    #: Seconds between supervisor passes (restarts, health checks).
    supervise_interval: float = Field(default=0.5, gt=0, le=60)
    #: Live moves out of this node: the pause QEMU aims for at the switch-over, unless a move
    #: asks for another (QEMU's own default is 300 ms).
    migrate_downtime_limit_ms: int = Field(default=300, ge=1, le=60_000)
    #: Where other nodes reach this node's migration listener (it listens on the API's
    #: address): set, the node takes part in the moves its controller drives (``ukedge node
    #: drain --migrate``) as source and as target; unset, it takes no part.
    migration_host: str | None = Field(default=None, min_length=1, max_length=253)
    log_format: Literal["json", "text"] = "json"
    #: One log record per request (``ukedge.host.access``), as the hub writes.
    access_log: bool = True

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        return value and config.check_listen_addr(value, example=DEFAULT_ADDR)

    @field_validator("controller")
    @classmethod
    def _controller(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError(f"controller URL {value!r}: expected https://HOST[:PORT]")
        return value

    @field_validator("join_token")
    @classmethod
    def _join_token(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                JoinToken.parse(value)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("migration_host")
    @classmethod
    def _migration_host(cls, value: str | None) -> str | None:
        if value is not None and (value in ("0.0.0.0", "::") or not _HOST_PATTERN.match(value)):
            raise ValueError(
                f"migration host {value!r}: give the address or host name other nodes reach "
                "this one at (e.g. 192.0.2.10 or edge1.example)"
            )
        return value

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(parse_platform(value))
        except ImageError as exc:
            raise ValueError(str(exc)) from None

    @property
    def node_platform(self) -> Platform:
        """The platform the node runs: the setting, else the host's."""
        return parse_platform(self.platform) if self.platform else host_platform()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"invalid node name {value!r}: letters, digits, '_', '.', '-'")
        return value

    @field_validator("memory", "image_budget")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_size(value, default_unit="M")
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return value

    @property
    def socket_path(self) -> Path:
        return self.socket or self.data_dir / "agent.sock"

    @property
    def token_path(self) -> Path:
        return self.data_dir / "token"


def load_agent_settings(
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> AgentSettings:
    """Defaults < ``config_file`` (``[agent]`` table or top level) < ``UKEDGE_AGENT_*`` < flags."""
    return config.load_settings(
        AgentSettings,
        env_prefix=ENV_PREFIX,
        section="agent",
        config_file=config_file,
        environ=environ,
        overrides=overrides,
    )


def _size(text: str | None) -> int | None:
    return parse_size(text, default_unit="M") if text else None


def _capacity(settings: AgentSettings) -> Capacity:
    """The host's figures, with what the operator set in their place."""
    host = host_capacity(settings.overcommit)
    return Capacity(
        memory_allocatable_bytes=_size(settings.memory) or host.memory_allocatable_bytes,
        cpus=settings.cpus or host.cpus * _VCPUS_PER_CPU,
        overcommit_ratio=settings.overcommit,
    )


class Agent:
    """A node's services, started and stopped together."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        data = settings.data_dir
        paths.private_dir(data)
        # First, so that a refused enrolment leaves nothing open.
        enrolment = ensure_enrolment(
            data,
            settings.controller,
            settings.join_token,
            name=settings.name,
            architecture=settings.node_platform.machine,
            labels=settings.labels,
        )
        if not settings.node_platform.matches(host_platform()):
            log.warning(
                "this node runs %s on a %s host: its instances are emulated (TCG), many times "
                "slower than native",
                settings.node_platform,
                host_platform().machine,
            )
        self.node = open_node(
            NodeLayout.data_dir(data),
            qemu_user=settings.qemu_user,
            capacity=_capacity(settings),
            budget=_size(settings.image_budget),
            hub=settings.hub,
            name=settings.name,
            labels=settings.labels,
            policy=load_policy(settings.policy) if settings.policy else None,
            platform=settings.node_platform,
        )
        self.manager = self.node.manager
        self.images = self.node.cache
        #: The controller link, when this node is enrolled (started by :meth:`start_link`).
        self.link: ControllerLink | None = None
        sinks: list[result_sinks.ResultSink] = [
            result_sinks.create(url, url) for url in settings.mqtt
        ]
        if enrolment is not None:
            self.link = ControllerLink(self.node, enrolment, data)
            sinks.append(
                ControllerSink(
                    LinkClient(
                        enrolment.controller,
                        enrolment.cert,
                        enrolment.node_id,
                        enrolment.credential,
                    ),
                    self._deployment_of,
                )
            )
        self.spool = ResultSpool(data / "results.db")
        self.forwarder = ResultForwarder(
            self.spool, sinks, manager_sources(self.manager), settings.name
        )
        self.manager.before_remove.append(
            lambda i: self._drain_results(i.id, self.manager.results_path(i))
        )
        #: Moves of instances to other agents, and offers to take theirs in.
        self.migrations = Migrations(
            self.node,
            self.spool,
            data,
            node_name=settings.name,
            listen_host=settings.addr.host if settings.addr else "127.0.0.1",
            downtime_limit_ms=settings.migrate_downtime_limit_ms,
        )
        if self.link is not None and settings.migration_host is not None:
            self.migrations.before_commit = self.link.moves.arrived
            self.link.take_part_in_moves(
                LinkMoves(self.migrations, settings.migration_host), settings.migration_host
            )
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _deployment_of(self, instance_id: str) -> str | None:
        try:
            marks = marks_of(self.manager.records.find(instance_id).labels)
        except NoSuchInstanceError:
            return None
        return marks.deployment if marks else None

    def _drain_results(self, instance_id: str, path: Path) -> None:
        if self.forwarder.sinks:
            self.forwarder.drain(instance_id, path)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background work; instances from an earlier run are re-adopted first."""
        adopted = self.manager.list()
        if adopted:
            log.info("re-adopted %d running instance(s)", len(adopted))
        self.images.evict()  # the budget may have been lowered while the agent was down
        swept = self.manager.sweep_prewarm_leftovers()
        if swept:
            log.info("removed %d leftover(s) of prewarms an earlier agent did not finish", swept)
        resumed = self.migrations.recover()
        if resumed:
            log.info("resumed %s, left paused by a move an earlier agent did not finish", resumed)
        swept = self.manager.sweep_removed_leftovers()
        if swept:
            log.info(
                "removed %d instance directories an earlier agent did not finish removing", swept
            )
        if self.forwarder.sinks:
            self.forwarder.start()
        self._stop.clear()
        self._supervisor = threading.Thread(
            target=self._supervise, name="ukedge-supervisor", daemon=True
        )
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stop.wait(self.settings.supervise_interval):
            try:
                self.manager.supervise()
            except Exception:
                log.exception("supervisor pass failed")

    def start_link(self) -> None:
        """Start heartbeats and the reconcile of the desired state (when enrolled). Separate
        from :meth:`start` so that the server starts it once on-demand listening is set up:
        the saved desired state is applied at once and may hold on-demand instances."""
        if self.link is not None:
            self.link.start()

    def close(self) -> None:
        """Stop the background work. Instances keep running; the next agent re-adopts them."""
        self.migrations.close()
        if self.link is not None:
            self.link.stop()
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=30)
        if self.forwarder.running:
            self.forwarder.stop()
        for sink in self.forwarder.sinks:
            sink.close()
        self.node.close()
        self.manager.close()
