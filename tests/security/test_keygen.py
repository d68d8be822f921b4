"""`gafferctl keygen` never lets the secret key be readable by others, not even for a moment."""

from __future__ import annotations

import os
import stat

import pytest

from gaffer.common import keys
from gaffer.common.errors import ConfigError


def test_secret_is_created_private_with_o_excl(tmp_path, monkeypatch):
    """The secret file is opened with O_CREAT|O_EXCL and mode 0600 before a byte is written,
    and never chmod-ed afterwards (a chmod after writing leaves a window)."""
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy_open(path, flags, mode=0o777, *args, **kwargs):
        opened.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    chmods: list[str] = []
    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", lambda path, *a, **k: chmods.append(os.fspath(path)))
    public, secret = keys.generate(tmp_path, "alice")
    (path, flags, mode), = [entry for entry in opened if entry[0] == str(secret)]
    assert flags & os.O_CREAT and flags & os.O_EXCL and flags & os.O_NOFOLLOW
    assert mode == 0o600
    assert str(secret) not in chmods


def test_secret_is_private_whatever_the_umask(tmp_path):
    """Even with umask 0 the secret is 0600 and a directory keygen makes is 0700."""
    old = os.umask(0)
    try:
        public, secret = keys.generate(tmp_path / "new", "bob")
    finally:
        os.umask(old)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert keys.load_keypair(secret).public == keys.load_public(public)


def test_an_existing_key_or_a_planted_symlink_is_never_written_through(tmp_path):
    """keygen refuses to overwrite, and a symlink planted where the secret goes is not
    followed (the secret would land in a file someone else chose)."""
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "carol.key_secret").symlink_to(target)
    with pytest.raises(ConfigError, match="already exists"):
        keys.generate(tmp_path, "carol")
    assert target.read_text() == ""
