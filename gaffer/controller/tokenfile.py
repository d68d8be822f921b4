"""The initial admin token: ``<data_dir>/admin.token``, written on a controller's first start.

A fresh controller has no tokens, and the HTTP side accepts nothing without one, so the first
start creates the named token ``admin`` and writes its secret to a file only the controller's
user can read (mode 0600 from the moment it exists: ``O_CREAT|O_EXCL`` with the mode, never a
chmod after). Only the digest goes to the store, as for every token.

It is not made again while the token ``admin`` exists, nor while the file is there (after
``gafferctl token revoke admin`` the file is stale; delete it and restart to get a new one).

A crash can leave, and the next start finishes:

    admin.token.new, no token ``admin``     the file was written, the digest was not: the
                                            partial file is removed and it starts over
    admin.token.new and the token           the digest was stored, the file not yet renamed:
                                            it is renamed when it holds that token's secret
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gaffer.common.errors import ConfigError
from gaffer.common.roles import Role
from gaffer.controller.tokens import Principal, Tokens, new_secret

log = logging.getLogger("gaffer.controller.tokens")

ADMIN = "admin"
FILE = "admin.token"


async def ensure_admin_token(tokens: Tokens, data_dir: Path, now: float) -> Path | None:
    """Create the token ``admin`` and its file when neither exists; the file's path when
    one was written now (or finished after a crash), else None."""
    final = data_dir / FILE
    partial = data_dir / (FILE + ".new")
    if ADMIN in tokens:
        return _finish(tokens, partial, final, now)
    if final.exists():
        log.info("%s is there but the token %r is not (revoked?): not making another; delete "
                 "the file and restart for a new one", final, ADMIN)
        return None
    partial.unlink(missing_ok=True)
    secret = new_secret()
    _write_private(partial, (secret + "\n").encode("ascii"))
    await tokens.create(ADMIN, Role.ADMIN, now, secret=secret)
    os.replace(partial, final)
    log.info("wrote the initial admin token to %s (mode 0600): keep it secret", final)
    return final


def _finish(tokens: Tokens, partial: Path, final: Path, now: float) -> Path | None:
    """A start that crashed between storing the digest and renaming the file: rename it if
    it holds the admin token's secret, else drop it."""
    if not partial.exists():
        return None
    try:
        secret = partial.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        secret = ""
    if tokens.verify(secret, now) == Principal(ADMIN, Role.ADMIN) and not final.exists():
        os.replace(partial, final)
        return final
    partial.unlink(missing_ok=True)
    return None


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` mode 0600 from the start (O_EXCL: never over another file) and fsync."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may only have taken bits away; make it exactly 0600
        os.write(fd, data)
        os.fsync(fd)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
