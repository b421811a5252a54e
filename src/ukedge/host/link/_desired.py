"""The node's last desired state, kept on disk so the node runs it without the controller.

Saved (:mod:`._files`: temporary name, fsync, rename) before it is applied, so an agent that
restarts, after a crash or a reboot, applies what it was last told even while the controller is
unreachable (offline autonomy). A file that cannot be read back (a disk fault, a hand edit) is
set aside as ``desired.json.bad`` and the node starts as if it had none: the next heartbeat
reports generation 0 and the controller sends the whole state again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from ukedge.host.link._files import read_private, write_private
from ukedge.host.link._wire import DesiredState

__all__ = ["FILE_NAME", "DesiredStore"]

#: In the agent's data directory.
FILE_NAME = "desired.json"

log = logging.getLogger(__name__)


class DesiredStore:
    """``<data>/desired.json``: one :class:`DesiredState`, replaced whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> DesiredState | None:
        text = read_private(self.path)
        if text is None:
            return None
        try:
            return DesiredState.model_validate_json(text)
        except ValidationError as exc:
            bad = self.path.with_name(self.path.name + ".bad")
            self.path.replace(bad)
            log.error(
                "%s is not a desired state (%s); moved it to %s, the controller will send the "
                "state again",
                self.path,
                exc.errors()[0]["msg"] if exc.errors() else exc,
                bad,
            )
            return None

    def save(self, state: DesiredState) -> None:
        write_private(self.path, state.model_dump_json(indent=1), crash_name="link.desired.save")
