"""A throw-away PostgreSQL cluster for tests: Debian's postgresql 15 run from a tmp dir.

Tests run as root and PostgreSQL refuses to, so the cluster belongs to the ``postgres`` user
(``runuser -u postgres``), listens on a free port of 127.0.0.1 and on a Unix socket in its own
directory, with trust authentication. Missing binaries or user fail the fixture with a message
saying what to install; it never skips (CI installs ``postgresql`` with the Makefile's
DEB_PACKAGES).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.net import free_port

__all__ = ["PostgresCluster", "postgres_cluster", "running_postgres"]

_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PostgresCluster:
    root: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _psql(self, sql: str) -> None:
        subprocess.run(
            [
                "runuser", "-u", "postgres", "--",
                str(_BIN / "psql"), "-h", str(self.root), "-p", str(self.port),
                "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip


def _require() -> None:
    missing = [tool for tool in ("initdb", "pg_ctl", "psql") if not (_BIN / tool).exists()]
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing.append("the postgres user")
    if shutil.which("runuser") is None:
        missing.append("runuser")
    if missing:
        pytest.fail(
            f"PostgreSQL tests need Debian's postgresql 15 ({', '.join(missing)} missing): "
            "apt-get install postgresql (the Makefile's DEB_PACKAGES lists it)",
            pytrace=False,
        )


def _as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv], check=False, capture_output=True, text=True
    )


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresCluster]:
    """Init and start a cluster; stop it and remove its files at the end."""
    _require()
    root = Path(tempfile.mkdtemp(prefix="ukedge-pg-"))
    user = pwd.getpwnam("postgres")
    os.chown(root, user.pw_uid, user.pw_gid)
    root.chmod(0o700)
    data = root / "data"
    port = free_port()
    try:
        init = _as_postgres(
            str(_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        if init.returncode:
            pytest.fail(f"initdb failed: {init.stderr or init.stdout}", pytrace=False)
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = _as_postgres(
            str(_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if start.returncode:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            pytest.fail(f"PostgreSQL did not start: {start.stderr}{log}", pytrace=False)
        try:
            yield PostgresCluster(root, port)
        finally:
            _as_postgres(str(_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    with running_postgres() as cluster:
        yield cluster
