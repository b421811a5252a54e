"""Instance commands in the Docker idiom: ``run``, ``start``, ``ps``, ``logs``, ``stop``, ``kill``,
``rm``, ``inspect``, ``stats`` and ``events``. Each parses its flags, calls the node (this machine
or, with ``--host``, an agent) and renders."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ukedge.cli._attach import attach, fail_if_it_died_at_once
from ukedge.cli._console import err, out, print_image_record, print_json, print_table
from ukedge.cli._context import node, remote_host
from ukedge.errors import ImageError, InstanceError, UsageError
from ukedge.units import format_size, parse_duration, parse_size

if TYPE_CHECKING:
    from ukedge.host import RunRequest
    from ukedge.image import Platform

__all__ = ["prewarm", "register"]

# The packages behind these commands (SQLAlchemy, pydantic, QMP) load only when a command runs,
# so `ukedge --help` and the other commands start fast.


def _request(**fields: Any) -> RunRequest:
    from ukedge.host import parse_port_mapping, run_request

    fields["ports"] = [parse_port_mapping(p) for p in fields.get("ports") or []]
    return run_request(**fields)


def _parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid environment setting {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def run(
    image: Annotated[str, typer.Argument(help="Image to run (name:tag, digest or id prefix).")],
    args: Annotated[
        list[str] | None, typer.Argument(help="Arguments replacing the image's default args.")
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "--publish",
            "-p",
            help="Publish a guest port as HOST_PORT:GUEST_PORT, optionally prefixed by a host IP "
            "and suffixed by /udp (default: 127.0.0.1, tcp). Repeatable.",
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="Set an environment variable KEY=VALUE. Repeatable."),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", "-m", help="Guest memory, e.g. 64M (default: image's)."),
    ] = None,
    cpus: Annotated[
        int | None, typer.Option("--cpus", help="Virtual CPUs (default: the image's).")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; print the instance id.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Name the instance (default: a random one).")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="Guest hostname [the instance's name].")
    ] = None,
    remove: Annotated[
        bool,
        typer.Option(
            "--rm", help="Remove the instance when it exits (with -d: through a host agent only)."
        ),
    ] = False,
    cold: Annotated[
        bool,
        typer.Option(
            "--cold", help="Boot from scratch even when a prewarmed snapshot of this image exists."
        ),
    ] = False,
    restart: Annotated[
        str,
        typer.Option(
            "--restart",
            help="Restart policy: no, on-failure[:N] (non-zero exit, failed VM or unhealthy app; "
            "at most N times) or always; back-off doubles from 0.1 s to 60 s. The agent's "
            "supervisor applies it, so it needs --host.",
        ),
    ] = "no",
    on_demand: Annotated[
        bool,
        typer.Option(
            "--on-demand",
            help="Scale to zero: listen on the published port, boot the VM on the first "
            "connection, stop it after --idle-timeout without connections. Implies -d; the "
            "agent listens, so it needs --host.",
        ),
    ] = False,
    idle_timeout: Annotated[
        str,
        typer.Option("--idle-timeout", help="With --on-demand: stop after this long idle."),
    ] = "30s",
    platform: Annotated[
        str | None,
        typer.Option(
            "--platform",
            help="Run this platform of a multi-platform image, e.g. linux/arm64 (default: the "
            "node's); another architecture than the host's runs emulated (TCG), on purpose.",
        ),
    ] = None,
) -> None:
    """Boot an image as a unikernel VM.

    In the foreground the guest console streams to your terminal and the command exits with
    the app's exit status. Ctrl-C stops the app (SIGTERM); a second Ctrl-C kills the VM.
    SIGTERM and SIGHUP to this command (a `timeout`, a service stop, a closed terminal) stop
    the app the same way, and --rm still removes the instance.

    With -d the VM keeps running after this command returns; follow it with `ukedge logs -f`.

    After `ukedge image prewarm IMAGE` the VM resumes from a snapshot of the ready app instead
    of booting (same image, env and args); --cold boots anyway.

    An image missing from the node is pulled first (a short name from the node's hub).

    Examples: ukedge run -d -p 18080:8080 --restart on-failure:5 sensor-agg:1;
    ukedge --host tcp://edge-7:7600 run -d --on-demand --idle-timeout 30s -p 8080:8080 web:2
    """
    from ukedge.host import parse_restart_policy

    detach = detach or on_demand
    if not remote_host() and (on_demand or restart != "no"):
        # Both need a process that outlives this command: the agent's supervisor restarts,
        # its listener boots on demand.
        raise UsageError(
            f"{'--on-demand' if on_demand else '--restart'} needs a host agent: start one with "
            "`ukedge host serve` and pass --host (or set UKEDGE_HOST)"
        )
    if detach and remove and not remote_host():
        # Removing it when it ends needs a process that outlives this command.
        raise UsageError(
            "--rm with --detach needs a host agent, which removes the instance when it ends: "
            "start one with `ukedge host serve` and pass --host (or use `ukedge rm` later)"
        )
    try:
        idle_seconds = parse_duration(idle_timeout)
    except ValueError as exc:
        raise UsageError(f"--idle-timeout: {exc}") from None
    request = _request(
        image=image,
        name=name,
        args=args or None,
        env=_parse_env(env or []),
        ports=publish,
        memory_mib=parse_size(memory, default_unit="M") // (1 << 20) if memory else None,
        vcpus=cpus,
        hostname=hostname,
        cold=cold,
        restart=parse_restart_policy(restart),
        on_demand=on_demand,
        idle_timeout_s=idle_seconds,
        # In the foreground this command removes it (after reading its exit status).
        auto_remove=remove and detach,
        platform=platform,
    )
    target = node()
    _accelerator_notice()
    _emulation_notice(request.platform)
    # Subscribed before the run: an --rm instance may be gone before the early watch looks.
    events = target.events() if request.auto_remove else None
    try:
        instance = target.run(request)
        if detach:
            out.print(instance.id)
            fail_if_it_died_at_once(target, instance, events)
    finally:
        if isinstance(events, Generator):
            events.close()
    if detach:
        if instance.health.value == "unchecked":
            err.print(
                "note: no agent supervises this instance, so its health check is not run "
                "(ps shows it as unchecked); run it through `ukedge host serve` for health "
                "checks and restarts",
                style="yellow",
            )
        return
    status = attach(target, instance)
    if remove:
        target.remove(instance.id)
    sys.exit(status)


def _emulation_notice(platform: Platform | None) -> None:
    """Through an agent, say that a platform asked for on purpose may be emulated there (a
    local run's instance manager says so itself, knowing the host)."""
    if platform is None or not remote_host():
        return
    err.print(
        f"notice: running {platform}; on a node of another architecture it runs under "
        "emulation (TCG), many times slower than native",
        style="yellow",
    )


def _accelerator_notice() -> None:
    """Say once per host (when the probe actually ran) that VMs will be emulated."""
    if remote_host():
        return  # the agent's probe, not ours; `ukedge info` shows its verdict
    from ukedge.vmm import probe_accelerator

    verdict = probe_accelerator()
    if verdict.notice and verdict.source == "probe":
        err.print(verdict.notice, style="yellow")


def ps(
    all_instances: Annotated[
        bool, typer.Option("--all", "-a", help="Show ended instances too.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print instance ids only.")] = False,
) -> None:
    """List instances (running ones unless -a)."""
    from ukedge.cli._ps import PsFlags, render

    instances = node().list(all_instances=all_instances)
    render(
        [i.model_dump(mode="json") for i in instances],
        PsFlags(all_instances=all_instances, as_json=as_json, quiet=quiet),
    )


def logs(
    instance: Annotated[str, typer.Argument(help="Instance name or id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the instance ends.")
    ] = False,
    results: Annotated[
        bool,
        typer.Option("--results", help="Print the app's results lines instead of its console."),
    ] = False,
) -> None:
    """Print an instance's console output (or, with --results, its results device)."""
    stream = sys.stdout.buffer
    with contextlib.suppress(KeyboardInterrupt):
        for chunk in node().follow(instance, "results" if results else "console", follow=follow):
            stream.write(chunk)
            stream.flush()


def stop(
    instances: Annotated[list[str], typer.Argument(help="Instance names or ids.")],
    timeout: Annotated[
        float,
        typer.Option(
            "--time",
            "-t",
            min=0,
            max=3600,
            help="Seconds to wait for the app before killing the VM.",
        ),
    ] = 10.0,
) -> None:
    """Stop instances gracefully: SIGTERM to the app, kill after --time seconds.

    A stopped instance is not restarted by its restart policy. An on-demand instance is scaled
    to zero: its listener stays and the next connection boots it (`ukedge rm` removes it)."""
    manager = node()
    for key in instances:
        instance = manager.stop(key, timeout)
        out.print(instance.name)


def kill(
    instances: Annotated[list[str], typer.Argument(help="Instance names or ids.")],
) -> None:
    """Kill instances at once (the VM is ended without warning the app)."""
    manager = node()
    for key in instances:
        out.print(manager.kill(key).name)


def rm(
    instances: Annotated[list[str], typer.Argument(help="Instance names or ids.")],
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Kill running instances first.")
    ] = False,
) -> None:
    """Remove ended instances and their logs (running ones need --force)."""
    manager = node()
    for key in instances:
        out.print(manager.remove(key, force=force).name)


def inspect(
    target: Annotated[str, typer.Argument(help="Instance name/id, or an image reference.")],
) -> None:
    """Print an instance's (or else an image's) full record as JSON."""
    service = node()
    try:
        instance = service.get(target)
    except InstanceError:
        try:
            image = service.inspect_image(target)
        except (ImageError, UsageError):
            raise InstanceError(f"no such instance or image: {target}") from None
        print_image_record(image, target)
        return
    print_json(instance.model_dump(mode="json"))


def stats(
    instances: Annotated[
        list[str] | None, typer.Argument(help="Instance names or ids (default: all running).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what each instance's VM costs the host: memory (RSS, and PSS, which shares the
    mapped kernel among its users) and CPU time."""
    manager = node()
    targets = [manager.get(k) for k in instances] if instances else manager.list()
    rows = [manager.stats(i.id) for i in targets]
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
    else:
        print_table(
            ["INSTANCE ID", "NAME", "MEM (RSS)", "MEM (PSS)", "CPU TIME"],
            [
                (
                    r.id[:12],
                    r.name,
                    format_size(r.rss_bytes),
                    format_size(r.pss_bytes) if r.pss_bytes is not None else "-",
                    f"{r.cpu_seconds:.2f}s",
                )
                for r in rows
            ],
        )


def start(
    instances: Annotated[list[str], typer.Argument(help="Instance names or ids.")],
) -> None:
    """Start ended instances again (same image, settings and logs; the policy's count resets).

    An on-demand instance goes back to listening; its VM boots on the next connection."""
    manager = node()
    for key in instances:
        out.print(manager.start(key).name)


def events(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Follow instance state changes as they happen (create, start, die, restart, health…).

    It waits for new events until Ctrl-C; nothing from before it started is shown. Without
    --host it sees what every ukedge command on this machine does (another shell's `run`,
    `stop`, `rm`), from the node's event journal; with --host, the agent's stream.
    """
    import datetime as dt

    with contextlib.suppress(KeyboardInterrupt):
        for event in node().events():
            if as_json:
                out.print(event.model_dump_json(), markup=False)
                continue
            when = dt.datetime.fromtimestamp(event.time).isoformat(timespec="milliseconds")
            detail = f" exit={event.exit_code}" if event.exit_code is not None else ""
            if event.health.value != "none":
                detail += f" health={event.health.value}"
            out.print(
                f"{when} {event.action:<8} {event.name} ({event.id[:12]}) "
                f"{event.state.value}{detail}",
                markup=False,
            )


def prewarm(
    image: Annotated[str, typer.Argument(help="Image with a health check.")],
    args: Annotated[
        list[str] | None, typer.Argument(help="Arguments, as `ukedge run` would get them.")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="Environment, as `ukedge run` would get it. Repeatable."),
    ] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", "-m", help="Guest memory (default: the image's).")
    ] = None,
) -> None:
    """Boot an image until its health check passes and keep a snapshot of that ready guest.

    Later `ukedge run`s with the same image, env, args and memory resume from the snapshot in a
    fraction of a boot (a Python app under TCG boots in seconds). Resumed guests get a fresh RNG
    seed and the current time from the host.
    """
    manager = node()
    _accelerator_notice()
    began = time.monotonic()
    with err.status(f"booting {image} until its health check passes…"):
        path = manager.prewarm(
            _request(
                image=image,
                args=args or None,
                env=_parse_env(env or []),
                memory_mib=parse_size(memory, default_unit="M") // (1 << 20) if memory else None,
            )
        )
    err.print(f"snapshot ready in {time.monotonic() - began:.1f}s")
    out.print(str(path))


def register(app: typer.Typer) -> None:
    """The instance commands (``image prewarm`` is registered with its group, in ``images``)."""
    for command in (run, start, ps, logs, stop, kill, rm, inspect, stats, events):
        app.command(command.__name__)(command)
