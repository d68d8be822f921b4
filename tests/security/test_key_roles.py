"""Roles of CURVE client keys: a viewer key reads but cannot act, over real CURVE sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gaffer.cli import ctl
from gaffer.common.errors import Forbidden, TemplateNotFound
from gaffer.controller.controller import Controller
from keylab import client


def keygen(tmp_path: Path, name: str, role: str) -> None:
    """``gafferctl keygen NAME --role ROLE`` into tmp/role-keys."""
    result = CliRunner().invoke(ctl.main, ["keygen", name, "--dir", str(tmp_path / "role-keys"), "--role", role])
    assert result.exit_code == 0, result.output


def authorize(tmp_path: Path, keydir: Path, name: str) -> None:
    """Put NAME.key into clients/ the way an operator would: a new file renamed into place."""
    staged = keydir / "clients" / f".{name}.key.tmp"
    staged.write_bytes((tmp_path / "role-keys" / f"{name}.key").read_bytes())
    os.replace(staged, keydir / "clients" / f"{name}.key")


async def test_a_viewer_key_may_read_but_not_scale(tmp_path: Path, keydir: Path, controller: Controller):
    """A key authorized with role viewer gets ps and is refused scale with forbidden (naming
    the op and the role); the refusal is counted in status."""
    keygen(tmp_path, "watcher", "viewer")
    authorize(tmp_path, keydir, "watcher")
    watcher = client(tmp_path, controller, "watcher", keydir, folder="role-keys")
    try:
        assert await watcher.call("ps") == []
        with pytest.raises(Forbidden) as refused:
            await watcher.call("scale", name="web", count=3)
        assert (refused.value.op, refused.value.role) == ("scale", "operator")
        assert "'scale' needs the operator role; key 'watcher' is a viewer" in refused.value.message
        with pytest.raises(Forbidden):
            await watcher.call("token_create", name="mine", role="admin")
        assert (await watcher.call("status"))["requests"]["forbidden"] == 2
    finally:
        await watcher.close()


async def test_a_key_without_a_role_is_admin_and_a_role_change_applies_at_once(tmp_path, keydir, controller):
    """A key file without a role is admin (as before roles); replacing a key's file with
    another role takes effect on the next request, with no restart."""
    admin = client(tmp_path, controller, "admin", keydir)
    keygen(tmp_path, "bob", "viewer")
    authorize(tmp_path, keydir, "bob")
    bob = client(tmp_path, controller, "bob", keydir, folder="role-keys")
    try:
        with pytest.raises(TemplateNotFound):
            await admin.call("scale", name="web", count=3)  # past the role check
        with pytest.raises(Forbidden):
            await bob.call("scale", name="web", count=3)
        text = (tmp_path / "role-keys" / "bob.key").read_text().replace('role = "viewer"', 'role = "operator"')
        (tmp_path / "role-keys" / "bob.key").write_text(text)
        authorize(tmp_path, keydir, "bob")
        with pytest.raises(TemplateNotFound):
            await bob.call("scale", name="web", count=3)
    finally:
        await admin.close()
        await bob.close()
