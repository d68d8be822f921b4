"""Which store a controller keeps its state in: ``--store`` parsed (pure), then opened.

Two forms::

    sqlite:DIR                          the SQLite file DIR/gaffer.db (the default: the data dir)
    etcd://HOST[:PORT][,HOST[:PORT]...] an etcd cluster's members (PORT defaults to 2379)

``parse_store`` turns the text into a frozen value or a ConfigError with one line naming
``--store`` and what is wrong; ``open_store`` opens the store a value names. The etcd store is
the next step of issue 13: an etcd value parses, but opening it is refused for now.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gaffer.common.errors import ConfigError
from gaffer.controller.sqlitestore import SqliteStateStore
from gaffer.controller.statestore import StateStore

ETCD_PORT = 2379
FORMS = "sqlite:DIR or etcd://HOST:PORT[,HOST:PORT...]"
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")


@dataclass(frozen=True)
class SqliteSpec:
    """The SQLite store in ``data_dir``."""

    data_dir: Path

    def __str__(self) -> str:
        return f"sqlite:{self.data_dir}"


@dataclass(frozen=True)
class EtcdSpec:
    """An etcd cluster, by its members' client endpoints."""

    members: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        return "etcd://" + ",".join(f"{host}:{port}" for host, port in self.members)


StoreSpec = SqliteSpec | EtcdSpec


def parse_store(text: str) -> StoreSpec:
    """``--store``'s value as a ``StoreSpec``; ConfigError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--store: must be {FORMS}")
    text = text.strip()
    if text.startswith("sqlite:"):
        directory = text[len("sqlite:"):]
        if directory.startswith("//"):
            directory = directory[2:]
        if not directory:
            raise ConfigError(f"--store {text!r}: sqlite: needs a directory (sqlite:DIR)")
        return SqliteSpec(Path(directory))
    if text.startswith("etcd://"):
        return EtcdSpec(_members(text, text[len("etcd://"):]))
    raise ConfigError(f"--store {text!r}: must be {FORMS}")


def _members(text: str, rest: str) -> tuple[tuple[str, int], ...]:
    members: list[tuple[str, int]] = []
    for item in rest.split(","):
        member = _member(text, item.strip())
        if member in members:
            raise ConfigError(f"--store {text!r}: member {member[0]}:{member[1]} is named twice")
        members.append(member)
    return tuple(members)


def _member(text: str, item: str) -> tuple[str, int]:
    if not item:
        raise ConfigError(f"--store {text!r}: an empty member (etcd://HOST:PORT,HOST:PORT)")
    if "/" in item or "?" in item or "@" in item:
        raise ConfigError(f"--store {text!r}: {item!r} is not HOST:PORT (no path, query or user)")
    host, port = item, ETCD_PORT
    match = re.fullmatch(r"(.*):([^:\]]*)", item)
    if match is not None and not (item.startswith("[") and item.endswith("]")):
        host, digits = match.groups()
        if not digits.isdigit() or not 1 <= int(digits) <= 65535:
            raise ConfigError(f"--store {text!r}: port {digits!r} of {item!r} must be 1-65535")
        port = int(digits)
    if not _HOST.match(host):
        raise ConfigError(f"--store {text!r}: {host!r} is not a host name or address")
    return host, port


def open_store(spec: StoreSpec, *, on_write: Callable[[float], None] | None = None) -> StateStore:
    """Open the store ``spec`` names (``on_write``: each committed write's seconds)."""
    if isinstance(spec, SqliteSpec):
        return SqliteStateStore(spec.data_dir, on_write=on_write)
    raise ConfigError(
        f"--store {spec}: the etcd store is not built yet; use sqlite:DIR (the default: the data dir)"
    )


def default_store(data_dir: str | os.PathLike[str]) -> SqliteSpec:
    """The store when ``--store`` is not given: SQLite in the data dir."""
    return SqliteSpec(Path(data_dir))
