"""Role checks on the ZMQ request path, key file roles, the token ops and the admin token file
(no socket, no process)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gaffer.common import protocol
from gaffer.common.errors import Forbidden, InvalidArgument, from_wire
from gaffer.common.keys import AuthorizedKeys, generate, key_role, read_metadata
from gaffer.common.roles import OP_ROLES, Role
from gaffer.controller import tokenfile
from gaffer.controller.controller import Controller
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.principals import SessionPrincipals
from gaffer.controller.requests import Requests
from gaffer.controller.server import Session
from gaffer.controller.sqlitestore import SqliteStateStore
from gaffer.controller.tokenfile import ensure_admin_token
from gaffer.controller.tokenops import LOGIN_TTL, TokenOps
from gaffer.controller.tokens import CALLER, LOCAL, Principal, Tokens
from gaffer.testing import loop_turn
from gaffer.testing.channel import MemoryRouter
from gaffer.testing.clock import FakeClock
from tests.unit.token_harness import MemoryRows


class Roles:
    def __init__(self, roles: dict[str, Role]) -> None:
        self.roles = roles

    def role_of(self, name: str) -> Role | None:
        return self.roles.get(name)


async def ask(requests: Requests, session: Session, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    replies: list[dict[str, Any]] = []
    requests._reply = lambda _s, body: replies.append(body) or True
    body = {"id": 1, "op": op, "args": args or {}}
    requests.receive(session, protocol.Message(protocol.PROTOCOL_VERSION, "request", 1, body))
    for _ in range(50):
        if replies:
            break
        await loop_turn()
    assert replies, "no reply"
    return replies[0]


def client(name: str | None) -> Session:
    return Session(peer=b"p", role="client", name=name, address=None)


class TestRequestRoles:
    @pytest.fixture
    def requests(self) -> tuple[Requests, list[str]]:
        ran: list[str] = []

        async def record(args: dict[str, Any]) -> Any:
            ran.append("ran")
            return CALLER.get()

        ops = {"ps": record, "scale": record, "apply": record}
        principals = SessionPrincipals(Roles({"viewer1": Role.VIEWER, "ops1": Role.OPERATOR}))
        return Requests(ops, lambda _s, _b: True, principals.principal), ran

    async def test_a_viewer_key_is_refused_scale_and_allowed_ps(self, requests):
        """A viewer is answered forbidden for scale (naming the op and the role), and nothing
        runs; ps runs."""
        reqs, ran = requests
        reply = await ask(reqs, client("viewer1"), "scale")
        error = from_wire(reply["error"])
        assert isinstance(error, Forbidden) and (error.op, error.role) == ("scale", "operator")
        assert "key 'viewer1' is a viewer" in error.message
        assert ran == [] and reqs.forbidden == 1
        assert (await ask(reqs, client("viewer1"), "ps"))["ok"] is True

    async def test_an_operator_scales_but_does_not_apply(self, requests):
        """operator may scale, not apply (admin)."""
        reqs, _ = requests
        assert (await ask(reqs, client("ops1"), "scale"))["ok"] is True
        assert from_wire((await ask(reqs, client("ops1"), "apply"))["error"]).role == "admin"

    async def test_a_removed_key_is_refused_even_on_an_open_session(self, requests):
        """A key no longer in clients/ is refused on its next request, whatever the op."""
        reqs, _ = requests
        error = from_wire((await ask(reqs, client("gone"), "ps"))["error"])
        assert isinstance(error, Forbidden) and "no longer authorized" in error.message

    async def test_the_op_sees_its_caller(self, requests):
        """The op's task holds its caller's principal in CALLER."""
        reqs, _ = requests
        assert (await ask(reqs, client("ops1"), "ps"))["result"] == Principal("ops1", Role.OPERATOR)

    def test_without_keys_every_client_is_the_local_admin(self):
        """No keys (the unix socket; or --insecure): the caller is local, admin."""
        assert SessionPrincipals(None).principal(client(None)) == LOCAL
        assert SessionPrincipals(Roles({})).principal(client(None)) == LOCAL


class TestKeyRoles:
    def test_keygen_writes_the_role_into_the_public_file(self, tmp_path: Path):
        """keygen with a role writes role = "viewer" in the metadata section; without one, none."""
        public, secret = generate(tmp_path, "alice", Role.VIEWER)
        assert read_metadata(public) == {"role": "viewer"} and key_role(public) is Role.VIEWER
        plain, _ = generate(tmp_path, "bob")
        assert read_metadata(plain) == {} and key_role(plain) is Role.ADMIN

    def test_authorized_keys_know_each_role_and_refuse_a_bad_one(self, tmp_path: Path):
        """AuthorizedKeys gives each key's role (admin without one); a key with an unknown
        role is not authorized at all."""
        generate(tmp_path, "alice", Role.VIEWER)
        generate(tmp_path, "bob")
        bad, _ = generate(tmp_path / "x", "carol", Role.OPERATOR)
        text = bad.read_text().replace('role = "operator"', "role = 'root'")
        (tmp_path / "carol.key").write_text(text)
        keys = AuthorizedKeys(tmp_path)
        assert keys.role_of("alice") is Role.VIEWER and keys.role_of("bob") is Role.ADMIN
        assert keys.role_of("carol") is None and len(keys) == 2

    def test_a_hand_written_metadata_section_is_read(self, tmp_path: Path):
        """A metadata section written by hand (other ZeroMQ tools' layout, comments, single
        quotes) gives its role; properties of other sections are not taken for it."""
        path = tmp_path / "k.key"
        path.write_text(
            "#  comment\nmetadata\n    # a note\n    name = 'x = y'\n    role = 'operator'\n"
            "curve\n    public-key = \"abc\"\n    role = \"admin\"\n"
        )
        assert read_metadata(path) == {"name": "x = y", "role": "operator"}


class TestTokenOps:
    async def test_create_list_revoke(self):
        """token_create answers the secret once; token_list never shows it; token_revoke ends it."""
        tokens = Tokens(MemoryRows())
        ops = TokenOps(tokens, clock=lambda: 50.0).ops()
        made = await ops["token_create"]({"name": "ci", "role": "operator"})
        assert made["name"] == "ci" and made["role"] == "operator"
        assert tokens.verify(made["secret"], 51.0) == Principal("ci", Role.OPERATOR)
        listed = await ops["token_list"]({})
        assert listed == [{"name": "ci", "role": "operator", "created": 50.0, "last_used": 51.0}]
        assert await ops["token_revoke"]({"name": "ci"}) == {"name": "ci", "revoked": True}
        assert await ops["token_revoke"]({"name": "ci"}) == {"name": "ci", "revoked": False}

    @pytest.mark.parametrize("args, field", [({"role": "admin"}, "name"), ({"name": "x"}, "role"),
                                             ({"name": "x", "role": "root"}, "role"), ({"name": "a.b", "role": "admin"}, "name")])
    async def test_bad_arguments_name_the_field(self, args, field):
        """Bad token_create arguments are InvalidArgument naming the field."""
        with pytest.raises(InvalidArgument) as raised:
            await TokenOps(Tokens(MemoryRows())).ops()["token_create"](args)
        assert raised.value.argument == field

    async def test_login_issues_a_short_token_for_the_caller_s_role(self):
        """login gives a token with the caller's principal, valid LOGIN_TTL seconds."""
        tokens = Tokens(MemoryRows())
        now = [1000.0]
        login = TokenOps(tokens, clock=lambda: now[0]).ops()["login"]
        CALLER.set(Principal("alice", Role.VIEWER))
        try:
            answer = await login({})
        finally:
            CALLER.set(None)
        assert answer["role"] == "viewer" and answer["expires"] == 1000.0 + LOGIN_TTL
        assert tokens.verify(answer["token"], 1000.0 + LOGIN_TTL - 1) == Principal("alice", Role.VIEWER)
        assert tokens.verify(answer["token"], 1000.0 + LOGIN_TTL) is None
        assert tokens.listing() == []
        with pytest.raises(Forbidden):
            await login({})


class TestAdminTokenFile:
    async def test_first_start_writes_a_0600_file_and_stores_only_the_digest(self, tmp_path: Path):
        """The first start creates admin.token (0600) holding an admin secret; its bytes are
        not in the database; a second start makes nothing new."""
        store = SqliteStateStore(tmp_path)
        tokens = Tokens(store)
        path = await ensure_admin_token(tokens, tmp_path, 10.0)
        assert path == tmp_path / "admin.token"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        secret = path.read_text().strip()
        assert tokens.verify(secret, 11.0) == Principal("admin", Role.ADMIN)
        assert await ensure_admin_token(tokens, tmp_path, 12.0) is None
        await tokens.settled()
        await store.close()
        db = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("gaffer.db"))
        assert secret.encode() not in db
        assert path.read_text().strip() == secret

    async def test_not_made_again_after_a_revoke_while_the_file_is_there(self, tmp_path: Path):
        """After revoking admin, the stale file stops a new one; deleting it gives a new one."""
        tokens = Tokens(MemoryRows())
        path = await ensure_admin_token(tokens, tmp_path, 1.0)
        await tokens.revoke("admin")
        assert await ensure_admin_token(tokens, tmp_path, 2.0) is None and "admin" not in tokens
        path.unlink()
        assert await ensure_admin_token(tokens, tmp_path, 3.0) == path and "admin" in tokens

    async def test_the_file_is_never_readable_by_others_even_with_umask_0(self, tmp_path: Path, monkeypatch):
        """The file is created 0600 in the open call itself (O_EXCL), whatever the umask."""
        modes: list[int] = []
        real_open = os.open

        def watching_open(path: Any, flags: int, mode: int = 0o777, *rest: Any) -> int:
            if str(path).endswith(".new"):
                modes.append(mode)
                assert flags & os.O_EXCL and flags & os.O_CREAT
            return real_open(path, flags, mode, *rest)

        monkeypatch.setattr(tokenfile.os, "open", watching_open)
        old = os.umask(0)
        try:
            path = await ensure_admin_token(Tokens(MemoryRows()), tmp_path, 1.0)
        finally:
            os.umask(old)
        assert modes == [0o600] and stat.S_IMODE(os.stat(path).st_mode) == 0o600

    async def test_a_crash_before_the_digest_was_stored_starts_over(self, tmp_path: Path):
        """A leftover admin.token.new without the token is removed and a new token made."""
        (tmp_path / "admin.token.new").write_text("gaffer_stale\n")
        tokens = Tokens(MemoryRows())
        path = await ensure_admin_token(tokens, tmp_path, 1.0)
        assert tokens.verify(path.read_text().strip(), 2.0) == Principal("admin", Role.ADMIN)
        assert not (tmp_path / "admin.token.new").exists()

    async def test_a_crash_before_the_rename_is_finished(self, tmp_path: Path):
        """The token stored but its file still .new: the next start renames it."""
        tokens = Tokens(MemoryRows())
        path = await ensure_admin_token(tokens, tmp_path, 1.0)
        os.replace(path, tmp_path / "admin.token.new")
        assert await ensure_admin_token(tokens, tmp_path, 2.0) == path
        assert tokens.verify(path.read_text().strip(), 3.0) == Principal("admin", Role.ADMIN)


async def test_every_op_a_controller_serves_has_a_role_and_it_has_an_admin_token(tmp_path: Path):
    """A controller's ops (Api, events, tokens) are all in OP_ROLES, and its first start
    leaves admin.token (0600) in the data dir."""
    clock = FakeClock(start=10.0)
    controller = Controller(ControllerSettings(data_dir=tmp_path), clock=clock.time)
    await controller.serve_on(MemoryRouter(clock=clock).channel)
    try:
        assert {"token_create", "token_list", "token_revoke", "login", "ps", "replay"} <= set(controller.ops)
        assert set(controller.ops) <= set(OP_ROLES)
        assert stat.S_IMODE(os.stat(tmp_path / "admin.token").st_mode) == 0o600
        assert controller.tokens is not None and "admin" in controller.tokens
    finally:
        await controller.stop()
