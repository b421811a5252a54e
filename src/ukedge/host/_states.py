"""The states an instance goes through and what its health check says: plain enums, apart from
the models, so what reads records without validating them (``ukedge ps``) needs no pydantic."""

from __future__ import annotations

import enum

__all__ = ["HealthStatus", "InstanceState"]


class InstanceState(enum.StrEnum):
    """created → starting → running → stopping → exited | failed."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (InstanceState.STARTING, InstanceState.RUNNING, InstanceState.STOPPING)


class HealthStatus(enum.StrEnum):
    """What the image's health check last said about a running instance."""

    NONE = "none"  # the image has no health check
    STARTING = "starting"  # not yet passed once (within the start period)
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # failed ``retries`` probes in a row
    #: The image has a health check but no process runs it: an instance started daemonless
    #: (``ukedge run`` without an agent) once its command has returned. An agent that finds
    #: one probes it as it would a starting one.
    UNCHECKED = "unchecked"
