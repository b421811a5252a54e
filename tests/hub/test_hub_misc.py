"""Settings, CLI commands, scheduled GC, logs and the package's public API."""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import ukedge.hub
import ukedge.hub.storage
from kit.hub import push_blob
from ukedge.cli.main import app as cli
from ukedge.errors import UsageError
from ukedge.hub import load_settings
from ukedge.hub._v2 import V2Api
from ukedge.serverlog import JsonFormatter


@pytest.mark.parametrize("module", ["ukedge.hub", "ukedge.hub.storage"])
def test_public_api_is_complete(module: str) -> None:
    mod = importlib.import_module(module)
    public = {
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and not isinstance(value, type(importlib))
        and getattr(value, "__module__", module).startswith(module)
    }
    assert public <= set(mod.__all__), public - set(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name)


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('[hub]\naddr = "0.0.0.0:6000"\ngc_interval = 60\nservice = "file"\n')
    env = {"UKEDGE_HUB_SERVICE": "env", "UKEDGE_HUB_ANONYMOUS_PULL": "public/*, docs/*"}
    settings = load_settings(config, env, gc_interval=None, service="flag")
    assert settings.addr == "0.0.0.0:6000"
    assert (settings.addr.host, settings.addr.port) == ("0.0.0.0", 6000)
    assert settings.gc_interval == 60
    assert settings.service == "flag"
    assert settings.anonymous_pull == ["public/*", "docs/*"]
    assert load_settings(config, env).service == "env"
    with pytest.raises(UsageError, match="addr"):
        load_settings(None, {}, addr="nowhere")
    with pytest.raises(UsageError, match="auth"):
        load_settings(None, {"UKEDGE_HUB_AUTH": "maybe"})
    with pytest.raises(UsageError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", {})


def test_cli_user_token_and_gc(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "hubdata")
    r = runner.invoke(
        cli,
        ["hub", "user", "add", "alice", "--password-stdin", "--data", data],
        input="a long password\n",
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli,
        [
            "hub",
            "token",
            "create",
            "--name",
            "ci",
            "--scope",
            "repository:team/app:pull,push",
            "--data",
            data,
        ],
    )
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("ukr_")
    hub = ukedge.hub.Hub(ukedge.hub.HubSettings(data_dir=Path(data)))
    try:
        assert hub.auth.enabled
        assert hub.auth.authenticate("any", token).name == "ci"
        assert hub.auth.authenticate("alice", "a long password").name == "alice"
    finally:
        hub.close()
    r = runner.invoke(
        cli, ["hub", "token", "create", "--name", "bad", "--scope", "repo:x", "--data", data]
    )
    assert r.exit_code != 0
    r = runner.invoke(cli, ["hub", "gc", "--dry-run", "--json", "--data", data])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["dry_run"] is True


def test_scheduled_gc(hub_factory: Any) -> None:
    hub = hub_factory(gc_interval=0.2, gc_grace=0)
    with hub.client() as c:
        orphan = push_blob(c, "app", b"swept on schedule")
        deadline = time.monotonic() + 10
        while c.head(f"/v2/app/blobs/{orphan}").status_code == 200:
            assert time.monotonic() < deadline, "scheduled GC never ran"
            time.sleep(0.1)
        assert "ukedge_hub_gc_runs_total" in c.get("/metrics").text


def test_json_log_lines() -> None:
    record = logging.LogRecord(
        "ukedge.hub.access", logging.INFO, __file__, 1, "GET %s", ("/v2/",), None
    )
    record.status = 200
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "GET /v2/"
    assert line["status"] == 200
    assert line["logger"] == "ukedge.hub.access"


def test_token_endpoint_checks_service(hub_factory: Any) -> None:
    hub = hub_factory()
    with hub.client() as c:
        r = c.get("/token", params={"service": "someone-else"})
    assert r.status_code == 403
    assert r.json()["errors"][0]["code"] == "DENIED"


def test_openapi_describes_every_v2_endpoint(client: httpx.Client) -> None:
    """Every (endpoint, method) the /v2 dispatcher serves is in /openapi.json, and no other."""
    paths = client.get("/openapi.json").json()["paths"]
    where = {
        "blob": "/v2/{name}/blobs/{digest}",
        "upload": "/v2/{name}/blobs/uploads/{uuid}",
        "manifest": "/v2/{name}/manifests/{reference}",
        "tags": "/v2/{name}/tags/list",
        "referrers": "/v2/{name}/referrers/{digest}",
    }
    served = {
        (
            "/v2/{name}/blobs/uploads/" if (kind, method) == ("upload", "POST") else where[kind],
            method,
        )
        for kind, method in V2Api._handlers
    } | {("/v2/", "GET"), ("/v2/_catalog", "GET")}
    described = {
        (path, method.upper())
        for path, ops in paths.items()
        if path.startswith("/v2")
        for method in ops
    }
    assert described == served
    assert paths["/v2/{name}/blobs/{digest}"]["get"]["responses"]["416"]
