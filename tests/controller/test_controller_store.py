"""The controller's files and database: TLS identity and token modes, settings, migrations,
leadership, and the API served over HTTPS with the pinned certificate."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography import x509

from kit.controller import make_controller, running_controller
from ukedge.controller import Controller, load_controller_settings
from ukedge.controller._db import Database, join_tokens, metadata
from ukedge.controller._loop import Leadership
from ukedge.controller._migrate import upgrade
from ukedge.errors import UsageError
from ukedge.host.link import JoinToken, fetch_certificate


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_is_made_private_once_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "controller"
    first = make_controller(data)
    identity = first.identity
    first.close()
    assert identity.made_now
    assert _mode(data) == 0o700
    assert _mode(identity.key_path) == 0o600
    assert _mode(data / "admin.token") == 0o600
    assert _mode(data / "controller.db") == 0o600
    assert not list(data.glob(".*.tmp"))
    cert = x509.load_pem_x509_certificate(identity.cert_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    addresses = names.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in addresses
    assert ipaddress.ip_address("::1") in addresses

    again = make_controller(data)
    again.close()
    assert not again.identity.made_now
    assert again.identity.fingerprint == identity.fingerprint
    assert again.identity.admin_token == identity.admin_token


def test_settings_precedence_and_bad_values(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    config.write_text('[controller]\naddr = "127.0.0.1:7701"\nnot_ready_after_s = 30\n')
    settings = load_controller_settings(
        config,
        environ={"UKEDGE_CONTROLLER_NOT_READY_AFTER_S": "20"},
        grace_s=5,
        db=None,
    )
    assert (settings.addr, settings.not_ready_after_s, settings.grace_s) == (
        "127.0.0.1:7701",
        20,
        5,
    )
    assert settings.db_url == f"sqlite:///{settings.data_dir / 'controller.db'}"
    with pytest.raises(UsageError, match="db"):
        load_controller_settings(environ={}, db="mysql://x/y")
    with pytest.raises(UsageError, match="UKEDGE_CONTROLLER_NOPE"):
        load_controller_settings(environ={"UKEDGE_CONTROLLER_NOPE": "1"})
    with pytest.raises(UsageError, match="addr"):
        load_controller_settings(environ={}, addr="nowhere")


def test_migrations_make_exactly_the_tables(controller: Controller) -> None:
    with controller.db.read() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == _head()
        assert compare_metadata(context, metadata) == []


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    from ukedge.controller._migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_an_older_schema_is_brought_to_the_newest_keeping_its_rows(tmp_path: Path) -> None:
    """A database made by the first release (0001) opens with every later migration applied
    and its rows kept."""
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(database, "0001")
        with database.write() as connection:
            connection.execute(
                join_tokens.insert().values(
                    id="t1", secret_hash="0" * 64, description="kept", created_at=1.0
                )
            )
        upgrade(database)
        with database.read() as connection:
            context = MigrationContext.configure(connection)
            assert context.get_current_revision() == _head() != "0001"
            assert compare_metadata(context, metadata) == []
            kept = connection.execute(join_tokens.select()).one()
        assert kept.description == "kept"
    finally:
        database.close()


def test_one_leader_at_a_time(controller: Controller) -> None:
    other = Database(controller.settings.db_url)
    first, second = Leadership(controller.db), Leadership(other)
    try:
        assert first.hold()
        if controller.db.dialect == "sqlite":
            assert second.hold()  # one file, one machine: each process leads its own passes
            return
        assert not second.hold()
        assert first.hold()  # still holding
        first.release()
        assert second.hold()
        assert not first.hold()
    finally:
        first.release()
        second.release()
        other.close()


def test_served_over_https_with_the_pinned_certificate(tmp_path: Path) -> None:
    controller = make_controller(tmp_path / "controller")
    try:
        with running_controller(controller) as running, running.client() as admin:
            token = JoinToken.parse(admin.post("/v1/tokens", json={}).json()["token"])
            pem = fetch_certificate(running.url, token.fingerprint)
            assert pem.strip() == controller.identity.cert_pem.strip()
            with pytest.raises(UsageError, match="not the controller"):
                fetch_certificate(running.url, "0" * 64)
            assert admin.get("/v1/nodes").json() == []
            assert admin.get("/openapi.json").json()["info"]["title"] == "ukedge controller"
    finally:
        controller.close()
