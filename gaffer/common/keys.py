"""CURVE key files: generating, loading, fingerprints, and directories of authorized keys.

Files use ZeroMQ's certificate format (``NAME.key`` public, ``NAME.key_secret`` secret), so
keys made by other ZeroMQ tools work too. In an authorized directory the file name is the
identity the key is bound to: ``agents/node1.key`` may only ever act as node ``node1``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from gaffer.common.errors import ConfigError
from gaffer.common.template import NAME_RE


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    secret: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def fingerprint(public: bytes) -> str:
    """A short, stable digest of a Z85 public key, for logs (``sha256:`` + 16 hex digits)."""
    raw = z85.decode(public) if len(public) == 40 else public
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def generate(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` and ``name.key_secret`` (mode 0600) into ``directory``."""
    if not NAME_RE.match(name):
        raise ConfigError(f"key name {name!r} is not valid: use letters, digits, '-' and '_'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{name}.key"
    secret_path = directory / f"{name}.key_secret"
    for path in (public_path, secret_path):
        if path.exists():
            raise ConfigError(f"{path} already exists: refusing to overwrite a key")
    public_file, secret_file = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def load_keypair(path: str | Path) -> KeyPair:
    """Read a ``.key_secret`` file (which holds both halves)."""
    public, secret = _load(path)
    if secret is None:
        raise ConfigError(f"{path}: holds no secret key (use the .key_secret file)")
    return KeyPair(public, secret)


def load_public(path: str | Path) -> bytes:
    public, _ = _load(path)
    return public


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such key file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such key file") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a valid key file: {exc}") from None
    if public is None or len(public) != 40:
        raise ConfigError(f"{path}: not a valid key file: no 40-character public key")
    return public, secret


class AuthorizedKeys:
    """The public keys in one directory, each bound to the name of its file.

    Re-read when the directory changes, so adding a key needs no restart.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._by_key: dict[bytes, str] = {}
        self._stamp: float | None = None
        self.refresh()

    def refresh(self) -> None:
        try:
            stamp = self.directory.stat().st_mtime
        except FileNotFoundError:
            self._by_key, self._stamp = {}, None
            return
        if stamp == self._stamp:
            return
        by_key: dict[bytes, str] = {}
        for path in sorted(self.directory.glob("*.key")):
            name = path.stem
            if not NAME_RE.match(name):
                continue
            try:
                by_key[load_public(path)] = name
            except ConfigError:
                continue
        self._by_key, self._stamp = by_key, stamp

    def name_of(self, public: bytes) -> str | None:
        """The name bound to ``public`` (Z85), or None when it is not authorized."""
        self.refresh()
        return self._by_key.get(public)

    def __len__(self) -> int:
        return len(self._by_key)
