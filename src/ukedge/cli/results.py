"""``ukedge results``: the records the fleet's apps delivered to the controller, stored or live."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from ukedge.cli._console import out
from ukedge.cli._context import controller
from ukedge.cli._flags import seconds

if TYPE_CHECKING:
    from ukedge.controller import ResultRecordOut

__all__ = ["register", "result_line", "results"]


def result_line(record: ResultRecordOut, *, as_json: bool) -> str:
    """One record on one line: when, where from (node/instance #seq), what it said."""
    if as_json:
        return record.model_dump_json()
    when = dt.datetime.fromtimestamp(record.ts, dt.UTC).isoformat(timespec="milliseconds")
    where = f"{record.node_name}/{record.instance} #{record.seq}"
    if record.deployment:
        where = f"{record.deployment} {where}"
    if record.error is not None:
        said = f"error: {record.error}"
    elif record.result is not None:
        said = json.dumps(record.result, separators=(",", ":"), default=str)
    else:
        said = record.raw or ""
    return f"{when} {where} {said}"


def results(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing records as they arrive.")
    ] = False,
    deployment: Annotated[
        str | None, typer.Option("--deployment", "-d", help="Only this deployment's.")
    ] = None,
    node: Annotated[str | None, typer.Option("--node", "-n", help="Only this node's.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only records of the last DURATION, e.g. 10m or 2h."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print the results the fleet's apps delivered to the controller (-f: follow live).

    Without -f: every stored record that matches, oldest first. With -f: the records of
    --since (if given), then new ones as the controller stores them, until Ctrl-C. The stream
    survives a controller restart: it reconnects and resumes after the last record printed,
    so none is lost or shown twice.

    Examples: ukedge results --deployment sensor-agg --since 10m;
    ukedge results -f --json | jq .result
    """
    client = controller()
    window = seconds("--since", since)
    start = time.time() - window if window is not None else None
    last_id: int | None = None
    with contextlib.suppress(KeyboardInterrupt):
        if not follow or start is not None:
            for record in client.results(deployment=deployment, node=node, since=start):
                out.print(result_line(record, as_json=as_json), markup=False, highlight=False)
                last_id = record.id
        if follow:
            live = client.stream_results(
                deployment=deployment,
                node=node,
                since=start if last_id is None else None,
                after_id=last_id,
            )
            for record in live:
                out.print(result_line(record, as_json=as_json), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("results")(results)
