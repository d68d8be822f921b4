"""API tokens: who a bearer secret speaks for, and with which role.

Two kinds, one lookup (``verify``):

- **Named tokens** (``create``, ``revoke``, ``listing``; ``gafferctl token ...``) live in the
  store, so they survive restarts. Only the SHA-256 of each secret is stored. That is enough
  because a secret is 32 random bytes: nobody can guess it or its preimage, so the slow,
  salted hashes made for human passwords would add nothing but cost on every request. A copy
  of the database (a backup) grants nothing.
- **Issued tokens** (``issue``) live in memory only and expire: the one ``gaffer start`` prints
  for its run, a ``login`` token behind ``gafferctl dashboard``, a dashboard session. A restart
  forgets them, which is what they are for.

A secret is ``gaffer_`` + 43 url-safe base64 characters (the prefix lets secret scanners and
people recognise one). ``verify`` hashes what it is given, looks the digest up and confirms it
with ``hmac.compare_digest``: the lookup's timing depends only on the digest of the attacker's
own guess, which they cannot steer towards a stored one, so nothing about a stored secret
leaks. It never raises, whatever it is given (any object, any length, any characters).

Time (``now``) is wall-clock seconds (``time.time()``) in every method: it stamps ``created``
and ``last_used`` in the listing and bounds issued tokens. ``last_used`` is written at most
once a minute per token, so verifying stays a dictionary lookup, not a disk write; and that
write runs as a task of its own (owned by ``Tokens``, cancelled by ``close``): verifying never
waits for the store.

``CALLER`` holds the principal of the request being served (set by ``Requests`` for the ZMQ
side, by the HTTP layer for its own): the few operations that act for their caller (``login``)
read it, instead of every operation taking one more argument.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import logging
import math
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from gaffer.common.errors import InvalidArgument, LimitExceeded, StorageError
from gaffer.common.limits import NAME_RE
from gaffer.common.roles import Role, parse_role
from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.token_rows import StoredToken

log = logging.getLogger("gaffer.controller.tokens")

PREFIX = "gaffer_"
SECRET_BYTES = 32
SECRET_LENGTH = len(PREFIX) + 43
"""``gaffer_`` and 32 bytes in url-safe base64 without padding."""
MAX_TOKENS = 10_000
"""Named tokens a controller keeps: far more than a team needs, and a bound on memory."""
MAX_ISSUED = 10_000
"""Issued tokens held at once; past it, the one closest to expiry is dropped first."""
LAST_USED_EVERY = 60.0
"""Seconds between two writes of one token's ``last_used``."""
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for: a token name, a client key name, ``local`` (the owner of the
    controller's unix socket) or ``run`` (the token ``gaffer start`` prints)."""

    name: str
    role: Role


LOCAL = Principal("local", Role.ADMIN)
"""A client on the private unix socket (or any client of an ``--insecure`` controller)."""

CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("gaffer_caller", default=None)
"""The principal of the request being served, in that request's task (None: unknown)."""


class TokenRows(Protocol):
    """Where named tokens are kept (the ``StateStore``)."""

    async def put_token(self, name: str, role: str, digest: bytes, now: float) -> StoredToken: ...
    async def delete_token(self, name: str) -> bool: ...
    async def touch_token(self, name: str, ts: float) -> None: ...


@dataclass
class _Named:
    name: str
    role: Role
    digest: bytes
    created: float
    last_used: float | None
    written: float | None
    """When ``last_used`` was last written to the store."""


@dataclass(frozen=True)
class _Issued:
    principal: Principal
    digest: bytes
    expires: float


def new_secret() -> str:
    """A fresh secret: ``gaffer_`` + 32 random bytes in url-safe base64."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=")
    return PREFIX + raw.decode("ascii")


def digest_of(secret: object) -> bytes | None:
    """The SHA-256 of a well-formed secret; None for anything else (never raises)."""
    if (
        not isinstance(secret, str) or len(secret) != SECRET_LENGTH or not secret.startswith(PREFIX)
        or not _ALPHABET.issuperset(secret[len(PREFIX):])
    ):
        return None
    return hashlib.sha256(secret.encode("ascii")).digest()


class Tokens:
    """Named tokens (persisted as digests through ``rows``) and issued ones (in memory)."""

    def __init__(self, rows: TokenRows, stored: Iterable[StoredToken] = ()) -> None:
        """``stored``: the named tokens ``rows`` holds now (``await store.tokens()``)."""
        self._rows = rows
        self._named: dict[str, _Named] = {}
        self._by_digest: dict[bytes, _Named] = {}
        self._issued: dict[bytes, _Issued] = {}
        self._stamps: dict[str, float] = {}
        """``last_used`` stamps due to be written (by ``_stamping``)."""
        self._stamping: asyncio.Task | None = None
        for row in stored:
            self._remember(_Named(row.name, parse_role(row.role), row.digest, row.created, row.last_used, row.last_used))

    def verify(self, secret: str, now: float) -> Principal | None:
        """The principal ``secret`` speaks for, or None (unknown, revoked, expired, malformed)."""
        digest = digest_of(secret)
        if digest is None:
            return None
        named = self._by_digest.get(digest)
        if named is not None and hmac.compare_digest(named.digest, digest):
            self._used(named, now)
            return Principal(named.name, named.role)
        issued = self._issued.get(digest)
        if issued is None or not hmac.compare_digest(issued.digest, digest):
            return None
        if now >= issued.expires:
            del self._issued[digest]
            return None
        return issued.principal

    async def create(self, name: str, role: Role, now: float, secret: str | None = None) -> str:
        """Store a new named token and return its secret (shown once, never stored).

        ``secret``: one made beforehand with ``new_secret`` (the admin token file is written
        before its digest is stored, see ``tokenfile``). InvalidArgument for a bad name or
        role, Conflict for a name in use, LimitExceeded past MAX_TOKENS, StorageError when
        the store refuses; nothing changes then.
        """
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidArgument("name", "must be a token name: letters, digits, '-' and '_' (at most 64)")
        role = role if isinstance(role, Role) else parse_role(role)
        if len(self._named) >= MAX_TOKENS and name not in self._named:
            raise LimitExceeded(f"a controller keeps at most {MAX_TOKENS} tokens: revoke some first")
        secret = new_secret() if secret is None else secret
        digest = digest_of(secret)
        if digest is None:
            raise InvalidArgument("secret", "is not a gaffer token secret")
        stored = await self._rows.put_token(name, role.label, digest, now)
        self._remember(_Named(name, role, digest, stored.created, None, None))
        return secret

    async def revoke(self, name: str) -> bool:
        """Forget the named token ``name`` and every token issued to a principal of that
        name; True if there was any. StorageError (nothing changed) when the store refuses."""
        found = await self._rows.delete_token(name)
        named = self._named.pop(name, None)
        self._stamps.pop(name, None)
        if named is not None:
            self._by_digest.pop(named.digest, None)
        issued = [digest for digest, token in self._issued.items() if token.principal.name == name]
        for digest in issued:
            del self._issued[digest]
        return found or named is not None or bool(issued)

    def listing(self) -> list[dict[str, Any]]:
        """The named tokens by name: name, role, created, last_used; never a secret or digest."""
        return [
            {"name": t.name, "role": t.role.label, "created": t.created, "last_used": t.last_used}
            for t in sorted(self._named.values(), key=lambda t: t.name)
        ]

    def issue(self, principal: Principal, ttl: float, now: float) -> str:
        """A secret for ``principal``, valid ``ttl`` seconds from ``now`` (``math.inf``: until
        the controller stops); kept in memory only."""
        if not isinstance(ttl, (int, float)) or math.isnan(ttl) or ttl <= 0:
            raise InvalidArgument("ttl", "must be a positive number of seconds")
        self._make_room(now)
        secret = new_secret()
        digest = digest_of(secret)
        assert digest is not None
        self._issued[digest] = _Issued(principal, digest, now + ttl)
        return secret

    def __contains__(self, name: object) -> bool:
        """Whether a named token ``name`` exists."""
        return name in self._named

    @property
    def issued(self) -> int:
        """Issued tokens held (some may have expired and not been dropped yet)."""
        return len(self._issued)

    def _remember(self, named: _Named) -> None:
        self._named[named.name] = named
        self._by_digest[named.digest] = named

    def _used(self, named: _Named, now: float) -> None:
        named.last_used = now
        if named.written is not None and now - named.written < LAST_USED_EVERY:
            return
        named.written = now
        self._stamps[named.name] = now
        if self._stamping is None:
            self._stamping = asyncio.get_running_loop().create_task(self._write_stamps())

    async def _write_stamps(self) -> None:
        """Write the due ``last_used`` stamps, one at a time, until none is left."""
        try:
            while self._stamps:
                name = next(iter(self._stamps))
                ts = self._stamps.pop(name)
                try:
                    await self._rows.touch_token(name, ts)
                except StorageError:
                    pass  # the store logged why; a lost last_used stamp refuses no one
        finally:
            self._stamping = None

    async def settled(self) -> None:
        """Wait until the due ``last_used`` stamps are written (for tests)."""
        if self._stamping is not None:
            await asyncio.shield(self._stamping)

    async def close(self) -> None:
        """Stop writing stamps (the controller is stopping)."""
        await cancel_and_wait(self._stamping)

    def _make_room(self, now: float) -> None:
        """Drop expired issued tokens when full, then the ones closest to expiry."""
        if len(self._issued) < MAX_ISSUED:
            return
        for digest in [d for d, token in self._issued.items() if now >= token.expires]:
            del self._issued[digest]
        while len(self._issued) >= MAX_ISSUED:
            soonest = min(self._issued.values(), key=lambda token: token.expires)
            del self._issued[soonest.digest]
            log.warning("%d issued tokens held: dropped one for %s before it expired", MAX_ISSUED, soonest.principal.name)
