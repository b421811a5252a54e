"""``ukedge ps``: one rendering of instance records, and a way to list this machine's instances
that loads neither typer, rich nor pydantic.

Docker's ``ps`` answers in tens of milliseconds, and scripts call it in loops. The command
(``instances.ps``) renders what the node returns through :func:`render`; :func:`answer_locally`
renders the same records read straight from this machine's instance file, when nothing asks
for more: the flags are ``ps``'s own (anything else, ``--help`` or a root option included, goes
to typer), no agent is named (``UKEDGE_HOST``), no log level is asked for (``UKEDGE_LOG``: the
manager's path logs), every record was written by this version, and each is settled (ended, or
its machine runs as recorded: :func:`~ukedge.host.record_settled`, the manager's own test). A
record that needs reconciling sends the command through the manager, which reconciles it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from ukedge._portfmt import port_text
from ukedge.cli._console import ago, print_json, print_table
from ukedge.host import InstanceState

__all__ = ["PsFlags", "answer_locally", "parse_flags", "render", "status"]

_COLUMNS = ("INSTANCE ID", "NAME", "IMAGE", "STATUS", "PORTS", "CREATED")

#: How ``ps`` shows health beside "Up …": nothing without a check, and a daemonless instance's
#: check, which nobody runs, as unchecked rather than forever starting.
_HEALTH_SHOWN = {"none": "", "unchecked": " (health unchecked)"}


class PsFlags(NamedTuple):
    all_instances: bool = False
    as_json: bool = False
    quiet: bool = False


_LONG = {"--all": "all_instances", "--json": "as_json", "--quiet": "quiet"}
_SHORT = {"a": "all_instances", "q": "quiet"}


def parse_flags(args: Sequence[str]) -> PsFlags | None:
    """``ps``'s flags (``-a``, ``-q``, ``-aq``, ``--all``, ``--quiet``, ``--json``), or None
    for anything else."""
    chosen: dict[str, bool] = {}
    for arg in args:
        if arg in _LONG:
            chosen[_LONG[arg]] = True
        elif len(arg) > 1 and arg[0] == "-" and arg[1] != "-" and set(arg[1:]) <= set(_SHORT):
            chosen.update(dict.fromkeys((_SHORT[c] for c in arg[1:]), True))
        else:
            return None
    return PsFlags(**chosen)


def status(i: dict[str, Any]) -> str:
    """The STATUS column of one record (``Instance.model_dump(mode="json")``)."""
    on_demand, code = i["on_demand"], i["exit_code"]
    match InstanceState(i["state"]):
        case InstanceState.RUNNING:
            health = _HEALTH_SHOWN.get(i["health"], f" ({i['health']})")
            return f"Up {ago(i['started_at'])}{health}"
        case InstanceState.CREATED if on_demand:
            return "Idle (on demand)"
        case InstanceState.EXITED if on_demand and code in (0, None):
            return f"Idle (on demand) {ago(i['finished_at'])}"
        case InstanceState.EXITED:
            return f"Exited ({code}) {ago(i['finished_at'])} ago"
        case InstanceState.FAILED:
            return f"Failed {ago(i['finished_at'])} ago"
        case state:
            return state.value.capitalize()


def _ports(i: dict[str, Any]) -> str:
    return ", ".join(
        port_text(p["host_ip"], p["host_port"], p["guest_port"], p["protocol"]) for p in i["ports"]
    )


def render(instances: list[dict[str, Any]], flags: PsFlags) -> None:
    """Print the listing (records as ``Instance.model_dump(mode="json")``, in listing order)."""
    if flags.as_json:
        print_json(instances)
    elif flags.quiet:
        sys.stdout.write("".join(f"{i['id'][:12]}\n" for i in instances))
        sys.stdout.flush()
    else:
        print_table(
            _COLUMNS,
            [
                (
                    i["id"][:12],
                    i["name"],
                    i["image"],
                    status(i),
                    _ports(i),
                    ago(i["created_at"]) + " ago",
                )
                for i in instances
            ],
        )


def answer_locally(args: Sequence[str]) -> bool:
    """List this machine's instances if ``args`` (after ``ps``) and its records allow it without
    the manager (see the module docstring); False: nothing was printed, run the command."""
    flags = parse_flags(args)
    if flags is None or os.environ.get("UKEDGE_HOST") or os.environ.get("UKEDGE_LOG"):
        return False
    from ukedge import paths
    from ukedge.errors import UkedgeError
    from ukedge.host import instance_docs, listed_instances, record_settled

    try:
        docs = instance_docs(paths.instances_dir())
        if docs is None or not all(
            record_settled(d["state"], d["pid"], d["workdir"]) for d in docs
        ):
            return False
    except (UkedgeError, OSError, ValueError):
        return False  # the command says what is wrong
    render(
        listed_instances(
            docs,
            all_instances=flags.all_instances,
            active=lambda d: InstanceState(d["state"]).active,
            created=lambda d: d["created_at"],
        ),
        flags,
    )
    return True
