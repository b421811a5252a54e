"""A node's enrolment with its controller: made once with a join token, then reused.

``<data>/controller.json`` (0600, written crash-safely by :mod:`._files`) keeps the controller's
URL, the node id and credential it gave, and its certificate (the pin, so later starts trust
exactly that certificate without the token). The token is only needed the first time; a later
start reuses the record, and asking for another controller while enrolled is refused with the
way out (a node belongs to one controller; silently switching would orphan its instances).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ukedge.errors import UsageError
from ukedge.host.link._client import enrol_request
from ukedge.host.link._desired import FILE_NAME as DESIRED_FILE
from ukedge.host.link._files import read_private, write_private
from ukedge.host.link._token import JoinToken, fetch_certificate
from ukedge.host.link._wire import EnrolRequest

__all__ = ["Enrolment", "ensure_enrolment", "load_enrolment", "normalise_url"]

log = logging.getLogger(__name__)

FILE_NAME = "controller.json"


class Enrolment(BaseModel):
    """What a node keeps of its enrolment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    controller: str
    node_id: str
    credential: str
    #: The controller's certificate (PEM): the only one the node trusts for it.
    cert: str
    heartbeat_interval_s: float = 5.0


def normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


def load_enrolment(data_dir: Path) -> Enrolment | None:
    path = data_dir / FILE_NAME
    text = read_private(path)
    if text is None:
        return None
    try:
        return Enrolment.model_validate_json(text)
    except ValidationError as exc:
        raise UsageError(
            f"{path} is not an enrolment record ({exc.errors()[0]['msg']}); delete it and "
            "start the agent with --controller URL --join-token T to enrol again"
        ) from None


def ensure_enrolment(
    data_dir: Path,
    controller: str | None,
    join_token: str | None,
    *,
    name: str,
    architecture: str,
    labels: dict[str, str],
) -> Enrolment | None:
    """The node's enrolment: the stored one, or a new one made with ``join_token``; None when
    the node is not enrolled and no controller was asked for."""
    path = data_dir / FILE_NAME
    stored = load_enrolment(data_dir)
    if stored is not None:
        if controller is not None and normalise_url(controller) != stored.controller:
            raise UsageError(
                f"this node is enrolled with the controller {stored.controller}, not "
                f"{normalise_url(controller)}; to move it, remove it there (`ukedge node rm "
                f"{stored.node_id}`), delete {path} and start again with --controller "
                f"{normalise_url(controller)} --join-token T"
            )
        if join_token is not None:
            log.info("node %s is already enrolled; the join token is not needed", stored.node_id)
        return stored
    if controller is None:
        if join_token is not None:
            raise UsageError("--join-token needs --controller URL (the controller to join)")
        return None
    if join_token is None:
        raise UsageError(
            f"this node is not enrolled with {normalise_url(controller)} yet: pass --join-token "
            "(made by `ukedge controller token create` on the controller)"
        )
    enrolment = enrol(
        normalise_url(controller),
        JoinToken.parse(join_token),
        name=name,
        architecture=architecture,
        labels=labels,
    )
    # A desired state left by an earlier enrolment is another controller's: not to be applied
    # before the new one has said what it wants.
    (data_dir / DESIRED_FILE).unlink(missing_ok=True)
    write_private(path, enrolment.model_dump_json(indent=1), crash_name="link.enrolment.save")
    log.info("enrolled with %s as node %s", enrolment.controller, enrolment.node_id)
    return enrolment


def enrol(
    url: str, token: JoinToken, *, name: str, architecture: str, labels: dict[str, str]
) -> Enrolment:
    """Check the controller's certificate against the token's pin, then enrol over a
    connection that trusts exactly that certificate."""
    try:
        pem = fetch_certificate(url, token.fingerprint)
    except OSError as exc:
        raise UsageError(
            f"cannot reach the controller at {url} to check its certificate: {exc}"
        ) from exc
    reply = enrol_request(
        url,
        pem,
        EnrolRequest(token=token.credential, name=name, architecture=architecture, labels=labels),
    )
    return Enrolment(
        controller=url,
        node_id=reply.node_id,
        credential=reply.credential,
        cert=pem,
        heartbeat_interval_s=reply.heartbeat_interval_s,
    )
