"""The instance manager's side of moves, without booting: what a target checks before it takes
an instance in, its receiving directory, and the results spool taking over the numbering."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ukedge.errors import InstanceError, MigrationError, UsageError
from ukedge.host import InstanceManager, PortMapping, ResultSpool, run_request
from ukedge.host.instances._oplock import abandoned
from ukedge.host.results._spool import SpoolError


def test_the_target_checks_identity_and_makes_its_own_paths(manager: InstanceManager) -> None:
    here = manager.create(run_request(image="hello-c:1", name="here"))
    moved = here.model_copy(update={"id": "ab" * 16, "name": "moved", "workdir": "/elsewhere/x"})
    ports = [PortMapping(host_port=40123, guest_port=80)]
    candidate = manager.incoming(moved, ports)
    assert candidate.workdir == str(manager.root / moved.id)
    assert candidate.ports == ports and candidate.pid is None
    with pytest.raises(MigrationError, match="already has an instance here"):
        manager.incoming(here, [])
    with pytest.raises(MigrationError, match="already has an instance"):
        manager.incoming(moved.model_copy(update={"name": "here"}), [])
    for bad in ("../../etc", "AB" * 16, "ab" * 15):
        with pytest.raises(MigrationError, match="invalid id or name"):
            manager.incoming(moved.model_copy(update={"id": bad}), [])


def test_an_image_the_target_lacks_is_refused(manager: InstanceManager) -> None:
    here = manager.create(run_request(image="hello-c:1", name="here"))
    moved = here.model_copy(
        update={"id": "cd" * 16, "name": "moved", "image_digest": "sha256:" + "0" * 64}
    )
    with pytest.raises(Exception, match="0000000"):
        manager.incoming(moved, [])


def test_the_receiving_directory_is_locked_and_never_reused(manager: InstanceManager) -> None:
    here = manager.create(run_request(image="hello-c:1", name="here"))
    moved = here.model_copy(update={"id": "ef" * 16, "name": "moved"})
    candidate = manager.incoming(moved, [])
    with manager.receiving(candidate) as workdir:
        assert workdir.is_dir() and (workdir.stat().st_mode & 0o077) == 0
        assert not abandoned(workdir)  # a sweep leaves it alone
        with pytest.raises(MigrationError, match="leftover"), manager.receiving(candidate):
            pass
    manager.abort_incoming(workdir, None)
    assert not workdir.exists()


def test_the_spool_numbers_on_where_the_source_stopped(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    # The source read (and numbered 1..3) the first 24 bytes; the target got the whole file.
    results.write_bytes(b'{"a":1}\n{"a":2}\n{"a":3}\n{"a":4}\n{"a":5}\n{"a"')
    spool = ResultSpool(tmp_path / "spool.db")
    try:
        spool.add_sink("controller")
        spool.continue_stream("i1", "node-b", offset=24, next_seq=4)
        assert spool.acked("controller", "i1") == 3
        assert spool.ingest_file("i1", "node-b", results) == 2
        assert [(r.seq, r.line) for r in spool.records("i1")] == [(4, '{"a":4}'), (5, '{"a":5}')]
        assert [r.seq for r in spool.pending("controller")] == [4, 5]
        with pytest.raises(SpoolError, match="already has results"):
            spool.continue_stream("i1", "node-b", offset=0, next_seq=1)
        with pytest.raises(UsageError, match="invalid results position"):
            spool.continue_stream("i2", "node-b", offset=-1, next_seq=1)
    finally:
        spool.close()


def test_the_agent_setting_is_the_downtime_limit_of_live_moves() -> None:
    from ukedge.host import load_agent_settings
    from ukedge.host.migration import MigrateRequest

    env = {"UKEDGE_AGENT_MIGRATE_DOWNTIME_LIMIT_MS": "120"}
    assert load_agent_settings(environ=env).migrate_downtime_limit_ms == 120
    assert load_agent_settings(environ={}).migrate_downtime_limit_ms == 300
    with pytest.raises(UsageError, match="migrate_downtime_limit_ms"):
        load_agent_settings(environ={"UKEDGE_AGENT_MIGRATE_DOWNTIME_LIMIT_MS": "0"})
    # A move that names none takes the source agent's (filled in by Migrations.start).
    assert MigrateRequest.model_fields["downtime_limit_ms"].default is None


def test_a_controller_move_publishes_a_port_the_target_lacks_on_a_free_one(
    manager: InstanceManager,
) -> None:
    """``free_ports`` (a controller's move): a port held here is replaced by a free one on the
    same address, a free one is kept; without it the move is refused, naming the port."""
    here = manager.create(run_request(image="hello-c:1", name="here"))
    moved = here.model_copy(update={"id": "cd" * 16, "name": "moved", "workdir": "/elsewhere/x"})
    with socket.socket() as held, socket.socket() as probe:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        ports = [
            PortMapping(host_port=taken, guest_port=8080),
            PortMapping(host_port=free, guest_port=9090),
        ]
        with pytest.raises(InstanceError, match=f"127.0.0.1:{taken} cannot be bound"):
            manager.incoming(moved, ports)
        candidate = manager.incoming(moved, ports, free_ports=True)
    first, second = candidate.ports
    assert (first.host_ip, first.guest_port) == ("127.0.0.1", 8080) and first.host_port != taken
    assert second == ports[1]
