"""API tokens against a real controller: gafferctl's token and dashboard commands, tokens kept
across a restart as digests only, and the initial admin token file."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from gaffer.cli import ctl
from gaffer.common.roles import Role
from gaffer.controller.tokens import PREFIX, Principal

from httpapi import Http
from inproc import Cluster


async def gafferctl(cluster: Cluster, *args: str, code: int = 0) -> Result:
    """gafferctl against the in-process controller (its blocking client runs in a thread)."""
    assert cluster.controller is not None
    argv = ["--controller", cluster.controller.endpoint, *args]
    result = await asyncio.to_thread(CliRunner().invoke, ctl.main, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"gafferctl {' '.join(args)}: {result.exception!r}") from result.exception
    assert "Traceback" not in result.output
    assert result.exit_code == code, f"gafferctl {' '.join(args)}: {result.output}"
    return result


async def as_json(cluster: Cluster, *args: str) -> Any:
    return json.loads((await gafferctl(cluster, *args, "--json")).stdout)


async def restart(cluster: Cluster) -> None:
    assert cluster.client is not None and cluster.controller is not None
    await cluster.client.close()
    await cluster.controller.stop()
    cluster.client = cluster.controller = None
    await cluster.start_controller()


def store_bytes(data_dir: Path) -> bytes:
    """Every byte of the controller's SQLite files (the database, its WAL and shared memory)."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.iterdir()) if p.name.startswith("gaffer.db"))


async def test_token_commands(cluster: Cluster):
    """token create prints the secret once (and says so), list shows no secret, revoke ends it."""
    await cluster.start_controller()
    created = (await gafferctl(cluster, "token", "create", "ci", "--role", "operator")).stdout.splitlines()
    assert created[0] == "created token ci (operator):" and created[1].startswith(PREFIX)
    assert "not shown again" in created[2]
    secret = created[1]
    assert cluster.controller.tokens.verify(secret, 0.0) == Principal("ci", Role.OPERATOR)
    table = (await gafferctl(cluster, "token", "list")).stdout
    assert table.splitlines()[0].split() == ["NAME", "ROLE", "CREATED", "LAST", "USED"]
    assert secret not in table and "ci" in table and "admin" in table
    assert [(r["name"], r["role"]) for r in await as_json(cluster, "token", "list")] == [("admin", "admin"), ("ci", "operator")]
    made = await as_json(cluster, "token", "create", "bot", "--role", "viewer")
    assert made["role"] == "viewer" and made["secret"].startswith(PREFIX)
    assert (await gafferctl(cluster, "token", "revoke", "ci")).stdout.strip() == "revoked ci"
    assert cluster.controller.tokens.verify(secret, 0.0) is None
    assert "no token named ci" in (await gafferctl(cluster, "token", "revoke", "ci", code=1)).output
    refused = await gafferctl(cluster, "token", "create", "x", "--role", "root", code=2)
    assert "viewer" in refused.output and "Traceback" not in refused.output
    taken = await gafferctl(cluster, "token", "create", "bot", "--role", "admin", code=1)
    assert "exists" in taken.output


async def test_tokens_survive_a_restart_as_digests_only(cluster: Cluster):
    """A created token still verifies after a controller restart, and neither it nor the
    admin token's secret is anywhere in the SQLite files."""
    controller = await cluster.start_controller()
    data_dir = controller.settings.data_dir
    secret = (await as_json(cluster, "token", "create", "ci", "--role", "viewer"))["secret"]
    admin = (data_dir / "admin.token").read_text().strip()
    await restart(cluster)
    assert cluster.controller.tokens.verify(secret, 0.0) == Principal("ci", Role.VIEWER)
    assert cluster.controller.tokens.verify(admin, 0.0) == Principal("admin", Role.ADMIN)
    assert (data_dir / "admin.token").read_text().strip() == admin  # not made again
    stored = store_bytes(data_dir)
    assert stored and secret.encode() not in stored and admin.encode() not in stored
    assert secret[len(PREFIX):].encode() not in stored


async def test_the_admin_token_file_is_0600_and_holds_an_admin_secret(cluster: Cluster):
    """A controller's first start writes <data_dir>/admin.token, mode 0600, an admin token."""
    controller = await cluster.start_controller()
    path = controller.settings.data_dir / "admin.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert controller.tokens.verify(path.read_text().strip(), 0.0) == Principal("admin", Role.ADMIN)


async def test_dashboard_prints_a_login_url_for_the_caller_s_role(cluster: Cluster):
    """gafferctl dashboard prints <base>/#login=<token>, a short-lived admin token for the
    socket's owner; --url sets the base."""
    await cluster.start_controller()
    line = (await gafferctl(cluster, "dashboard")).stdout.strip()
    status = await cluster.call("status")
    base = ctl.http_base(status.get("http"))
    assert line.startswith(f"{base}/#login={PREFIX}")
    token = line.partition("#login=")[2]
    assert cluster.controller.tokens.verify(token, time.time()) == Principal("local", Role.ADMIN)
    shown = await as_json(cluster, "dashboard", "--url", "https://gaffer.example:8443/")
    assert shown["url"].startswith(f"https://gaffer.example:8443/#login={PREFIX}") and shown["role"] == "admin"
    assert not any(row["name"] == "local" for row in await as_json(cluster, "token", "list"))


async def test_dashboard_and_token_secrets_open_the_http_api(cluster: Cluster):
    """With HTTP on, gafferctl dashboard points at the controller's own address, and its login
    token, a created token and the admin.token secret each pass the bearer check of
    GET /v1/status; a revoked one is 401 at once."""
    controller = await cluster.start_controller(http="127.0.0.1:0")
    http = Http(controller)
    try:
        url = (await gafferctl(cluster, "dashboard")).stdout.strip()
        assert url.startswith(f"{controller.http.url}/#login={PREFIX}")
        viewer = (await as_json(cluster, "token", "create", "watch", "--role", "viewer"))["secret"]
        admin = (controller.settings.data_dir / "admin.token").read_text().strip()
        for token in (url.partition("#login=")[2], viewer, admin):
            assert (await http.request("GET", "/v1/status", token)).status == 200
        await gafferctl(cluster, "token", "revoke", "watch")
        assert (await http.request("GET", "/v1/status", viewer)).status == 401
    finally:
        await http.close()
