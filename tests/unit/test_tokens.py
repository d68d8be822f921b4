"""API tokens: named ones stored as digests, issued ones in memory with an expiry (no socket)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.errors import Conflict, InvalidArgument, StorageError
from gaffer.common.roles import Role
from gaffer.controller import tokens as tokens_module
from gaffer.controller.sqlitestore import SqliteStateStore
from gaffer.controller.tokens import (
    LAST_USED_EVERY, PREFIX, SECRET_LENGTH, Principal, Tokens, digest_of, new_secret,
)
from tests.unit.token_harness import MemoryRows


class TestSecrets:
    def test_shape(self):
        """A secret is gaffer_ + 43 url-safe base64 characters, each one different."""
        made = {new_secret() for _ in range(50)}
        assert len(made) == 50
        for secret in made:
            assert secret.startswith(PREFIX) and len(secret) == SECRET_LENGTH
            assert digest_of(secret) == hashlib.sha256(secret.encode()).digest()

    @given(st.one_of(st.text(max_size=120), st.binary(max_size=60), st.integers(), st.none(),
                     st.lists(st.integers(), max_size=3), st.text(min_size=43, max_size=43).map(lambda t: PREFIX + t)))
    async def test_verify_never_raises_on_junk(self, junk):
        """verify answers None for anything that is not a live secret: any type, length or character."""
        tokens = Tokens(MemoryRows())
        await tokens.create("ops", Role.ADMIN, 1.0)
        assert tokens.verify(junk, 2.0) is None


class TestNamedTokens:
    async def test_create_verify_revoke(self):
        """A created token verifies as its name and role until it is revoked."""
        tokens = Tokens(MemoryRows())
        secret = await tokens.create("ci", Role.OPERATOR, 10.0)
        assert tokens.verify(secret, 11.0) == Principal("ci", Role.OPERATOR)
        assert await tokens.revoke("ci") is True
        assert tokens.verify(secret, 12.0) is None
        assert await tokens.revoke("ci") is False

    async def test_only_the_digest_is_stored(self):
        """The rows hold the SHA-256 of the secret, never the secret."""
        rows = MemoryRows()
        secret = await Tokens(rows).create("ci", Role.VIEWER, 10.0)
        stored = rows.rows["ci"]
        assert stored.digest == hashlib.sha256(secret.encode()).digest()
        assert secret.encode() not in repr(stored).encode()

    async def test_a_taken_name_is_a_conflict_and_the_old_secret_keeps_working(self):
        """Creating a name twice is Conflict; the first token is untouched."""
        tokens = Tokens(MemoryRows())
        first = await tokens.create("ci", Role.VIEWER, 1.0)
        with pytest.raises(Conflict):
            await tokens.create("ci", Role.ADMIN, 2.0)
        assert tokens.verify(first, 3.0) == Principal("ci", Role.VIEWER)

    @pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, 7, None, "é"])
    async def test_a_bad_name_is_refused_by_field(self, name):
        """A token name must be a gaffer name; InvalidArgument names the field."""
        with pytest.raises(InvalidArgument) as raised:
            await Tokens(MemoryRows()).create(name, Role.VIEWER, 1.0)
        assert raised.value.argument == "name"

    async def test_a_failing_store_changes_nothing(self):
        """When the store refuses, create and revoke raise and memory stays as it was."""
        rows = MemoryRows()
        tokens = Tokens(rows)
        kept = await tokens.create("kept", Role.ADMIN, 1.0)
        rows.fail = True
        with pytest.raises(StorageError):
            await tokens.create("new", Role.ADMIN, 2.0)
        with pytest.raises(StorageError):
            await tokens.revoke("kept")
        assert "new" not in tokens
        assert tokens.verify(kept, 3.0) == Principal("kept", Role.ADMIN)

    async def test_listing_has_no_secret_and_last_used_is_written_at_most_once_a_minute(self):
        """listing shows name, role, created, last_used; verifying writes last_used at most
        once per LAST_USED_EVERY, and a store failure there refuses no one."""
        rows = MemoryRows()
        tokens = Tokens(rows)
        secret = await tokens.create("ci", Role.VIEWER, 100.0)
        for step in range(10):
            assert tokens.verify(secret, 101.0 + step) is not None
        await tokens.settled()
        assert rows.touches == 1
        assert tokens.listing() == [{"name": "ci", "role": "viewer", "created": 100.0, "last_used": 110.0}]
        tokens.verify(secret, 101.0 + LAST_USED_EVERY)
        await tokens.settled()
        assert rows.touches == 2
        rows.fail = True
        assert tokens.verify(secret, 300.0) == Principal("ci", Role.VIEWER)
        await tokens.settled()

    async def test_tokens_survive_a_new_tokens_over_the_same_sqlite_store(self, tmp_path: Path):
        """Named tokens are read back from the store file: a restart keeps them, with only
        the digest in the file's bytes."""
        store = SqliteStateStore(tmp_path)
        secret = await Tokens(store).create("ci", Role.OPERATOR, 5.0)
        await store.close()
        store = SqliteStateStore(tmp_path)
        again = Tokens(store, await store.tokens())
        assert again.verify(secret, 6.0) == Principal("ci", Role.OPERATOR)
        assert again.listing()[0]["created"] == 5.0
        await again.settled()
        await store.close()
        data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("gaffer.db"))
        assert secret.encode() not in data and secret[len(PREFIX):].encode() not in data


class TestIssuedTokens:
    def test_an_issued_token_expires(self):
        """An issued token verifies as its principal until ttl has passed, then never again."""
        tokens = Tokens(MemoryRows())
        secret = tokens.issue(Principal("local", Role.ADMIN), 300.0, 1000.0)
        assert tokens.verify(secret, 1299.9) == Principal("local", Role.ADMIN)
        assert tokens.verify(secret, 1300.0) is None
        assert tokens.issued == 0

    def test_issued_tokens_are_not_stored_or_listed(self):
        """Issued tokens live in memory only: nothing is written, nothing listed."""
        rows = MemoryRows()
        tokens = Tokens(rows)
        tokens.issue(Principal("run", Role.ADMIN), math.inf, 1.0)
        assert rows.rows == {} and tokens.listing() == []

    async def test_revoking_a_name_drops_what_was_issued_to_it(self):
        """revoke(name) also ends every token issued to a principal of that name."""
        tokens = Tokens(MemoryRows())
        named = await tokens.create("alice", Role.OPERATOR, 1.0)
        login = tokens.issue(Principal("alice", Role.OPERATOR), 300.0, 2.0)
        other = tokens.issue(Principal("bob", Role.VIEWER), 300.0, 2.0)
        assert await tokens.revoke("alice")
        assert tokens.verify(named, 3.0) is None and tokens.verify(login, 3.0) is None
        assert tokens.verify(other, 3.0) == Principal("bob", Role.VIEWER)

    @pytest.mark.parametrize("ttl", [0, -1, math.nan, "5"])
    def test_a_bad_ttl_is_refused(self, ttl):
        """ttl must be a positive number (infinity allowed)."""
        with pytest.raises(InvalidArgument):
            Tokens(MemoryRows()).issue(Principal("x", Role.VIEWER), ttl, 1.0)

    def test_memory_is_bounded_and_the_soonest_to_expire_goes_first(self, monkeypatch):
        """Past MAX_ISSUED, expired tokens go, then the ones closest to expiry; a token
        without an end (gaffer start's) outlives them."""
        monkeypatch.setattr(tokens_module, "MAX_ISSUED", 5)
        tokens = Tokens(MemoryRows())
        run = tokens.issue(Principal("run", Role.ADMIN), math.inf, 0.0)
        logins = [tokens.issue(Principal("u", Role.VIEWER), 100.0 + i, 0.0) for i in range(10)]
        assert tokens.issued == 5
        assert tokens.verify(run, 1.0) == Principal("run", Role.ADMIN)
        assert tokens.verify(logins[-1], 1.0) is not None
        assert tokens.verify(logins[0], 1.0) is None


@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from(["create", "revoke", "issue", "verify"]),
                          st.sampled_from(["a", "b", "c"]), st.sampled_from(list(Role)),
                          st.floats(0, 50)), max_size=40))
async def test_verify_agrees_with_a_model(steps):
    """Over any sequence of create/revoke/issue and time passing, verify answers exactly what
    a plain model says: the live named token's principal, or an unexpired issued one's."""
    tokens = Tokens(MemoryRows())
    named: dict[str, tuple[str, Role]] = {}
    issued: list[tuple[str, Principal, float]] = []
    now = 0.0
    for action, name, role, dt in steps:
        now += dt
        if action == "create" and name not in named:
            named[name] = (await tokens.create(name, role, now), role)
        elif action == "revoke":
            await tokens.revoke(name)
            named.pop(name, None)
            issued = [item for item in issued if item[1].name != name]
        elif action == "issue":
            principal = Principal(name, role)
            issued.append((tokens.issue(principal, 20.0, now), principal, now + 20.0))
        for secret, role_made in named.values():
            assert tokens.verify(secret, now) is not None
        for secret, principal, expires in issued:
            assert tokens.verify(secret, now) == (principal if now < expires else None)
    for name, (secret, role_made) in named.items():
        assert tokens.verify(secret, now) == Principal(name, role_made)
