"""Following an instance that ``ukedge run`` started: its console streamed until it ends (stop
signals forwarded to it), or, for ``run -d``, a short watch that fails the command when the
guest never really ran. Apart from the commands' modules because only ``run`` needs it."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

from ukedge.cli._console import err
from ukedge.errors import InstanceError, NoSuchInstanceError

if TYPE_CHECKING:
    from ukedge.host import Instance, InstanceEvent, NodeService

__all__ = ["attach", "fail_if_it_died_at_once"]


#: How long `run -d` watches a new instance before leaving it: long enough for a guest that
#: cannot boot (memory too small, a missing program) to end under emulation.
_EARLY_WATCH_S = 5.0
_EARLY_LINES = 10


def fail_if_it_died_at_once(
    target: NodeService, instance: Instance, events: Iterator[InstanceEvent] | None = None
) -> None:
    """Exit non-zero, with the reason and the last console lines, when a detached instance ends
    in its first seconds: `run -d` exiting 0 for a VM that never ran would hide the cause.

    ``events``, subscribed before the run, is how an ``--rm`` instance is judged: the agent may
    remove it (console and all) before this watch reads it again, and then only its ``die``
    event says how it ended.
    """
    from ukedge.host import InstanceState

    deadline = time.monotonic() + _EARLY_WATCH_S
    current = instance
    while current.state.active and time.monotonic() < deadline:
        if current.healthy_at is not None:
            return
        time.sleep(0.1)
        try:
            current = target.get(instance.id)
        except NoSuchInstanceError:
            if events is None:
                raise
            _judge_removed(instance, events)
            return
    ended = current.state in (InstanceState.EXITED, InstanceState.FAILED)
    if not ended or (current.state is InstanceState.EXITED and current.exit_code == 0):
        return  # running, or created and waiting (on demand), or a short job that succeeded
    lines: list[bytes] = []
    with contextlib.suppress(NoSuchInstanceError):  # removed (--rm) meanwhile: no console
        lines = _last_console_lines(target, instance.id)
    _fail(current.name, current.exit_code, current.error, lines)


def _judge_removed(instance: Instance, events: Iterator[InstanceEvent]) -> None:
    """An ``--rm`` instance gone within the watch: exit as its ``die`` event says."""
    from ukedge.host import InstanceState

    for event in events:  # its die and remove events came before the record went
        if event.id != instance.id:
            continue
        if event.action == "die":
            if event.state is InstanceState.EXITED and event.exit_code == 0:
                return
            _fail(instance.name, event.exit_code, event.detail, [], removed=True)
        if event.action == "remove":
            return  # removed without dying here (another client's `rm -f`): not ours to judge


def _last_console_lines(target: NodeService, instance_id: str) -> list[bytes]:
    from ukedge.guest import is_protocol_line

    return [
        line
        for line in _console_lines(target.follow(instance_id, follow=False))
        if not is_protocol_line(line)
    ][-_EARLY_LINES:]


def _fail(
    name: str,
    exit_code: int | None,
    error: str | None,
    lines: list[bytes],
    *,
    removed: bool = False,
) -> NoReturn:
    status = exit_code if exit_code is not None else 125
    reason = error or f"exited with status {status}"
    err.print(f"instance {name} ended at once: {reason}", style="red", markup=False)
    if removed:
        err.print("it was removed (--rm), and its console with it", highlight=False)
    if lines:
        err.print("its last console lines:", highlight=False)
        for line in lines:
            err.print("  " + line.decode(errors="replace").rstrip(), highlight=False, markup=False)
    sys.exit(status or 125)


def _console_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Whole console lines (the last one may lack its newline when the instance ended)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


#: Signals that stop a foreground instance as Ctrl-C does: a `timeout`, a service manager's stop
#: and a closed terminal must not leave the VM running unattended (and --rm must still apply).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def attach(manager: NodeService, instance: Instance) -> int:
    """Stream the console until the instance ends; the first stop signal (Ctrl-C, SIGTERM,
    SIGHUP) stops the app, a second one kills the VM."""
    from ukedge.guest import is_protocol_line
    from ukedge.host import InstanceState

    interrupts = 0
    hung_up = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupts, hung_up
        interrupts += 1
        hung_up = hung_up or signum == signal.SIGHUP
        if interrupts == 1:
            if not hung_up:
                err.print(f"\nstopping (SIGTERM to the app; {_again(signum)} again to kill)…")
            raise KeyboardInterrupt
        with contextlib.suppress(InstanceError):
            manager.kill(instance.id)

    previous = {signum: signal.signal(signum, on_signal) for signum in _STOP_SIGNALS}
    stream = sys.stdout.buffer
    try:
        # The guest's exit report is protocol, not app output: its status becomes ours.
        shown = 0  # bytes of whole lines handled, so an interrupted follow resumes after them
        while True:
            try:
                for line in _console_lines(manager.follow(instance.id, offset=shown)):
                    shown += len(line)
                    if not is_protocol_line(line) and not hung_up:
                        stream.write(line)
                        stream.flush()
                break
            except KeyboardInterrupt:
                manager.stop(instance.id, timeout=10)
            except OSError:
                if not hung_up:  # else the terminal is gone: keep following, print nothing
                    raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    final = manager.get(instance.id)
    if final.state is InstanceState.FAILED:
        err.print(f"instance {final.name} failed: {final.error}", style="red", markup=False)
        return 125
    return final.exit_code if final.exit_code is not None else 125


def _again(signum: int) -> str:
    """How the user sends the second signal: the same key, or the same signal again."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
