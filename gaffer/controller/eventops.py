"""The client operations of the event stream: ``replay`` and ``snapshot``.

A subscriber that missed events (a gap in a ``prev`` chain, a reconnect, a restart) asks
``replay`` for the events after its last position that match its prefixes; the event log
answers them, or ``too_old`` when it no longer holds them all. Then the subscriber lists a
``snapshot`` (nodes, templates and instances, as ``nodes``, ``templates`` and ``ps`` list them)
stamped with the position it was taken at, and replays from there: the Clone pattern of the
ZeroMQ guide, and Kubernetes' list-then-watch.

A snapshot comes in pages (``limit`` items, a ``continue`` token), every page carrying the
position of the first one (kept in the token). A page read later may show newer state than
that position; replaying from it applies some events twice, which is harmless since events
describe state changes. ``ps`` rows come without the agents' cpu and memory samples (null):
a snapshot is state, and asking every agent for samples per page would make it slow.
"""

from __future__ import annotations

import bisect
import time
from typing import Any, Mapping, Protocol

from gaffer.common import arguments as arg
from gaffer.common.errors import InvalidArgument
from gaffer.common.limits import MAX_INT
from gaffer.controller.api import Op
from gaffer.controller.instance_rows import fill_rows, instance_key
from gaffer.controller.eventlog import EventLog
from gaffer.controller.paging import MAX_LIMIT, decode_token, encode_token
from gaffer.controller.store import StoredTemplate

MAX_PREFIXES = 64
MAX_PREFIX = 256
"""Characters of one prefix: no topic is longer."""
REPLAY_LIMIT = 1_000
SNAPSHOT_LIMIT = 2_000
KINDS = ("node", "template", "instance")


class Templates(Protocol):
    templates: Mapping[str, StoredTemplate]

    def template_views(self, names: list[str]) -> list[dict[str, Any]]: ...


class StateRows(Protocol):
    """Where the snapshot's rows come from (``Api``: the same rows its listings give)."""

    cluster: Templates

    def node_rows(self, names: list[str] | None = None) -> list[dict[str, Any]]: ...
    def instance_rows(self, name: str | None) -> list[dict[str, Any]]: ...


class EventOps:
    """``replay`` and ``snapshot`` over the hub's event log and the API's listings."""

    def __init__(self, events: EventLog, rows: StateRows) -> None:
        self._log = events
        self._rows = rows

    def ops(self) -> dict[str, Op]:
        return {"replay": self.replay, "snapshot": self.snapshot}

    async def replay(self, args: dict[str, Any]) -> dict[str, Any]:
        """The events after ``since`` matching ``prefixes`` (see ``EventLog.replay``)."""
        since = arg.integer(args, "since", arg.MISSING, 0, MAX_INT)
        wanted = prefixes(args)
        limit = arg.integer(args, "limit", REPLAY_LIMIT, 1, MAX_LIMIT)
        return self._log.replay(since, wanted, limit).to_wire()

    async def snapshot(self, args: dict[str, Any]) -> dict[str, Any]:
        """One page of the nodes, templates and instances, stamped with a position."""
        limit = arg.integer(args, "limit", SNAPSHOT_LIMIT, 1, MAX_LIMIT)
        token = args.get("continue")
        if token is None:
            position, kind, after = self._log.last, 0, None
        else:
            position, kind, after = _read_token(decode_token(token))
        items: list[dict[str, Any]] = []
        while kind < len(KINDS) and len(items) < limit:
            rows, more = self._page(kind, after, limit - len(items))
            items.extend({"kind": KINDS[kind], "data": row} for row in rows)
            if more is not None:
                after = more
                break
            kind, after = kind + 1, None
        done = kind >= len(KINDS)
        return {
            "position": position,
            "items": items,
            "continue": None if done else encode_token([position, kind, after or []]),
        }

    def _page(self, kind: int, after: list[Any] | None, count: int) -> tuple[list[dict[str, Any]], list[Any] | None]:
        """Up to ``count`` rows of ``KINDS[kind]`` after the key ``after``, and the key of the
        last one when more follow."""
        if kind == 0:
            names = [row["name"] for row in self._rows.node_rows()]
            shown, more = _names_after(names, after, count)
            return self._rows.node_rows(shown), more
        if kind == 1:
            shown, more = _names_after(sorted(self._rows.cluster.templates), after, count)
            return self._rows.cluster.template_views(shown), more
        rows = self._rows.instance_rows(None)
        if after:
            mark = _comparable(after)
            try:
                rows = [row for row in rows if _comparable(instance_key(row)) > mark]
            except TypeError:
                raise InvalidArgument("continue", "is not a token of this listing") from None
        shown_rows = rows[:count]
        fill_rows(shown_rows, self._rows.cluster.templates, {}, time.time())
        more_key = _comparable(instance_key(shown_rows[-1])) if len(rows) > count else None
        return shown_rows, more_key


def prefixes(args: dict[str, Any], key: str = "prefixes") -> list[str]:
    """1..MAX_PREFIXES topic prefixes ("" selects every topic), each at most MAX_PREFIX characters."""
    value = args.get(key)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PREFIXES:
        raise InvalidArgument(key, f"must be a list of 1..{MAX_PREFIXES} topic prefixes (\"\" for every topic)")
    for index, item in enumerate(value):
        if not isinstance(item, str) or len(item) > MAX_PREFIX:
            raise InvalidArgument(
                f"{key}[{index}]", f"must be a topic prefix (a string of at most {MAX_PREFIX} characters)"
            )
    return value


def _names_after(names: list[str], after: list[Any] | None, count: int) -> tuple[list[str], list[Any] | None]:
    if after:
        if len(after) != 1 or not isinstance(after[0], str):
            raise InvalidArgument("continue", "is not a token of this listing")
        names = names[bisect.bisect_right(names, after[0]):]
    shown = names[:count]
    return shown, [shown[-1]] if len(names) > count else None


def _read_token(key: list[Any]) -> tuple[int, int, list[Any] | None]:
    """``(position, kind, after)`` from a snapshot's ``continue`` token."""
    if (
        len(key) != 3 or isinstance(key[0], bool) or not isinstance(key[0], int) or not 0 <= key[0] <= MAX_INT
        or isinstance(key[1], bool) or not isinstance(key[1], int) or not 0 <= key[1] < len(KINDS)
        or not isinstance(key[2], list)
    ):
        raise InvalidArgument("continue", "is not a token of a snapshot")
    return key[0], key[1], key[2] or None


def _comparable(key: Any) -> list[Any]:
    """Keys as JSON gives them back (tuples become lists), so a decoded token compares."""
    return [_comparable(part) if isinstance(part, (list, tuple)) else part for part in key]
